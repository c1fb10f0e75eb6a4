"""`llmcli quantize --calibrate FILE`: how much each input column of each layer matters, from a text run
through the float model (llama.cpp's importance matrix: the mean squared activation a column), for the code
search (engine.quant.codes) to weight its squared error by. On weights that sit on no grid it cut int4's KL
on held-out text by two thirds (docs/quantization.md).

The text is read and cut into windows before any weight is: a missing, empty, binary or too short file is
refused by name first. Imports torch lazily; may import engine.load (the float model) and modelfs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmcli.errors import LlmcliError, squash

WINDOW = 512  # tokens a forward pass
MOST_WINDOWS = 8  # 4,096 tokens: the importance settles well before (docs/quantization.md)


def read_text(path: Path) -> str:
    """The calibration text, or a one-line refusal naming the file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise LlmcliError(f"cannot read the calibration text: {squash(exc)}", path=path) from None
    if not raw.strip():
        raise LlmcliError("the calibration text is empty", path=path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise LlmcliError("the calibration text is not UTF-8 text (a binary file?)", path=path) from None
    if "\x00" in text:
        raise LlmcliError("the calibration text holds NUL bytes (a binary file?)", path=path)
    return text


def windows(tokenizer: Any, text: str, path: Path) -> list[list[int]]:
    """The text's tokens in windows of WINDOW (at most MOST_WINDOWS; a shorter tail dropped)."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if len(ids) < WINDOW:
        raise LlmcliError(f"the calibration text is {len(ids)} tokens, shorter than one window of {WINDOW}", path=path)
    count = min(len(ids) // WINDOW, MOST_WINDOWS)
    return [ids[i * WINDOW : (i + 1) * WINDOW] for i in range(count)]


def importance(model: Any, layers: list[str], chunks: list[list[int]]) -> dict[str, Any]:
    """Each layer's mean squared input a column over the windows, as float32 [in_features]."""
    import torch

    sums: dict[str, Any] = {}
    counts: dict[str, int] = dict.fromkeys(layers, 0)

    def hook(name: str) -> Any:
        def seen(_module: Any, inputs: tuple, _output: Any) -> None:
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).to(torch.float32)
            sums[name] = sums.get(name, 0) + (x * x).sum(0)
            counts[name] += x.shape[0]

        return seen

    handles = [model.get_submodule(name).register_forward_hook(hook(name)) for name in layers]
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for chunk in chunks:
                model(torch.tensor([chunk], device=device))
    finally:
        for handle in handles:
            handle.remove()
    return {name: (sums[name] / counts[name]).cpu() for name in layers if counts[name]}
