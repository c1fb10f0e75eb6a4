"""Quantization: weights kept small, one module per concern. The schemes' table (schemes): int4 and int8
weight-only codes (int4, int8), the code searches they share (codes) and the layers that run them on torch's
int4 kernel (layers); which layers a scheme takes and the record of it (choice); quantizing while loading
(while_loading), from float weights, from a GGUF file's own blocks (gguf_blocks) or from `llmcli quantize`'s
files (saved, written by export); torch's dynamic int8 (int8_dynamic).

May import engine.meta, the model-reading layer (modelfs) and the shared top-level modules (errors, plan,
units); never engine.load, which calls it, nor anything above the engine.
"""
