"""Loading a model: the device and dtype chosen, the directory checked (custom code, pickle weights, free
memory), then tokenizer and weights through from_pretrained, with an adapter, a quantization scheme or
serve's prepacked kernel applied; the replay block that says what was loaded where; and the one thread on which
a loaded model computes (worker).

May import engine.quant and engine.meta, modelfs and the shared top-level modules; never engine.generate or
engine.batch, which build on it.
"""
