"""`--server` in front of engines other than llmcli serve (vLLM, any OpenAI-compatible server): which engine
answers, what each flag becomes in its requests, and its answers turned into llmcli's own records.

Under client.py: may import modelfs and the shared bottom modules (flags, plan, scoring, errors); never torch,
the engine, the server or anything above it.
"""
