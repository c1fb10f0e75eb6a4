"""The architecture without its weights: the model built from config.json on torch's meta device, its
parameters counted (tied weights once), its module tree, and where `--device-map auto` would place it.

The lowest room of the engine: may import modelfs and the shared top-level modules only. inspect's report
reads it too (it never loads a weight).
"""
