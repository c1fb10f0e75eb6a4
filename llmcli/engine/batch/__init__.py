"""serve's batching engine: every request that can share a forward pass joins one running batch at the next
step (continuous batching), each row with its own logits processors, random stream and stop conditions.

May import engine.generate (a row's call and its result), engine.step (a lone row's compiled step),
engine.load (where inputs go), modelfs (the KV geometry and free memory) and the shared top-level modules. The
server drives it; nothing in the engine imports it.
"""
