"""The analyses behind the commands that look into a model rather than only generate with it: next-token
and score (probe), any-length perplexity, compare, the logit lens, replay, bench, dpo (preference pairs read
and tokenized as TRL does, its two sides, the figures) and reward (a reward model's scores). Each turns loaded
models into a record that reports renders.

A layer above the engine: may import engine (any room), reports (to build records and their display),
modelfs and the shared top-level modules; never server, client or commands. Torch only inside functions.
"""
