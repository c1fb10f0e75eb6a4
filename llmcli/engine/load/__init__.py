"""Loading a model: the device and dtype chosen, the directory checked (custom code, pickle weights, free
memory), then tokenizer and weights through from_pretrained, with an adapter, a quantization scheme or
serve's prepacked kernel applied; and the replay block that says what was loaded where.

May import engine.quant and engine.meta, modelfs and the shared top-level modules; never engine.generate or
engine.batch, which build on it.
"""
