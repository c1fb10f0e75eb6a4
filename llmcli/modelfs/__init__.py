"""Reading model files without torch: config, tokenizer, safetensors headers, GGUF metadata, adapters, the
Hub cache and remote headers, reference files, and the embedded default model's cache.

The layer under the engine: may import only the shared bottom modules (errors, units, quiet) and itself; never
torch at import (transformers only inside the function that converts the default model's GGUF).
"""
