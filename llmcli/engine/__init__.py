"""The engine: everything that holds a model's weights in memory, in six rooms.

Listed from the top down, each room imports only the rooms below it, the model-reading layer (modelfs) and the
shared top-level modules (errors, plan, prompts, flags, genargs, output, units, quiet); never reports, analysis,
server, client, foreign or commands, which sit above it. Every module imports torch and transformers inside its
functions, so that importing one costs nothing until a model is used.

- batch: serve's continuous-batching engine (step scheduler, rows, batched forward, the batch's KV cache).
- generate: one generate() call, from prompt ids to results and stats (also tokens, constraints, logprobs).
- step: the one-row decoding step compiled ahead of time (AOTInductor), kept in llmcli's home per model and CPU.
- load: the model, device and dtype chosen, the files checked and the weights loaded (adapters, prepacking).
- quant: what the loader does to weights to keep them small (quantization schemes and their kernels).
- meta: the architecture on torch's meta device, no weights read (parameter counts, module tree, placement).
"""
