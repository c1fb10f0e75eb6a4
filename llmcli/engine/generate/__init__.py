"""One generation, every command's core: a prompt encoded (chat template or raw), generate()'s arguments
completed, generate() run in a worker thread with its text streamed, and the sequences collected into
`Result`s with their log-probabilities and `Stats`. Also the token table and xgrammar's constraints.

May import engine.load and engine.meta, modelfs and the shared top-level modules (plan, genargs, prompts,
errors); never engine.batch, which builds on it.
"""
