"""Quantization: weights turned into a smaller form at load, one module per scheme, each given a loaded
torch model (or its tensors) by engine.load and returning it quantized.

May import engine.meta and the shared top-level modules (errors, plan, units); never engine.load, which calls
it, nor anything above the engine.
"""
