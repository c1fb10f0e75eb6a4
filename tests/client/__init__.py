"""--server in front of other engines (vLLM, fakes that misbehave) and batch jobs that survive a kill."""
