"""llmcli serve over HTTP, alone and under a mixed load."""
