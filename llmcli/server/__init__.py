"""`llmcli serve`'s HTTP side: the OpenAI-compatible and llmcli endpoints (Starlette), request shapes as plain
data (protocol), transformers-serve compatibility, the loaded models and their keep-alive, and the runner.

Above the engine and the analyses: may import engine (batch, generate, load), analysis, modelfs and the shared
bottom modules, the engine and analysis only inside functions (nothing here imports torch at import); never
commands, client or reports.
"""
