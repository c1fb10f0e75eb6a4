"""One module per command (`*_cmd.py`) and the option groups they share (options, model_options,
decoding_options, prompt_options): each command only parses flags, checks them and calls the layers below.

The top layer under cli.py: may import every other part of llmcli, but the engine, analysis and server only
inside a command's function, after every usage check (tests/test_layers.py), so that --help and usage errors
never import torch.
"""
