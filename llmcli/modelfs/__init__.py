"""Reading model files without torch: config, tokenizer, safetensors headers, GGUF metadata."""
