"""`llmcli quantize MODEL OUT`: a safetensors checkpoint rewritten with its linear layers quantized
(compressed-tensors' layout, engine.quant.saved), shard by shard, so that no more than one shard of float
weights is ever in memory; everything is written into a hidden sibling of OUT and renamed into place at the
end, so that a failure (a full disk) leaves nothing behind.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from llmcli.engine.quant import saved
from llmcli.engine.quant.choice import HEAD_SCHEME, QuantChoice, layer_scheme, output_head, targets
from llmcli.engine.quant.schemes import SCHEMES
from llmcli.errors import LlmcliError, squash
from llmcli.modelfs.checkpoint import INDEX_NAME, SINGLE_NAME, Checkpoint

WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def export(source: Path, out: Path, ckpt: Checkpoint, model: Any, *, scheme: str, group_size: int,
           config: dict[str, Any], importance: dict[str, Any] | None = None) -> QuantChoice:  # fmt: skip
    """Writes OUT from `source` (whose names `model`, built empty, shares); returns what was quantized.
    `importance`: a weight per input column of each layer (engine.quant.calibration), for the code search."""
    names, kept = targets(model, scheme=scheme, group_size=group_size, device="cpu")
    head = output_head(model, names)
    choice = QuantChoice(scheme, group_size, kept=kept, head=head)
    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        weight_map = _write_shards(source, staging, ckpt, set(names), choice, importance or {})
        _write_config(staging, config, choice)
        _copy_others(source, staging)
        if len(set(weight_map.values())) > 1:
            index = {"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}
            (staging / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        staging.rename(out)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise LlmcliError(f"cannot write the quantized model: {squash(exc)}", path=out) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return choice


def _write_shards(source: Path, staging: Path, ckpt: Checkpoint, layers: set[str], choice: QuantChoice,
                  importance: dict[str, Any]) -> dict:  # fmt: skip
    from safetensors.torch import save_file

    from llmcli.engine.quant import shard_reader

    shards = list(dict.fromkeys(info.shard for info in ckpt.tensors.values()))
    weight_map: dict[str, str] = {}
    for number, shard in enumerate(shards, 1):
        name = SINGLE_NAME if len(shards) == 1 else f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        written: dict[str, Any] = {}
        for key, value in shard_reader.tensors(source / shard):
            layer = key.removesuffix(".weight")
            if key.endswith(".weight") and layer in layers:
                written |= _quantized(layer, value, choice, importance.get(layer))
                shard_reader.give_back_memory(value.numel() * value.element_size())
            else:
                written[key] = value
        save_file(written, str(staging / name), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(written, name)
    return weight_map


def _quantized(layer: str, weight: Any, choice: QuantChoice, importance: Any) -> dict[str, Any]:
    import torch

    scheme = SCHEMES[layer_scheme(layer, scheme=choice.scheme, head=choice.head)]
    codes = scheme.quantize(weight, choice.group_size, importance=importance, name=f"{layer}.weight")
    tensors = saved.tensors(layer, codes, middle=scheme.middle, dtype=torch.float32)
    choice.quantized.append(layer)
    choice.quantized_params += weight.numel()
    choice.quantized_bytes += round(scheme.bytes_per_weight(choice.group_size) * weight.numel())  # once loaded
    return tensors


def _write_config(staging: Path, config: dict[str, Any], choice: QuantChoice) -> None:
    heads = {choice.head: SCHEMES[HEAD_SCHEME]} if choice.head else {}
    quant = saved.quantization_config(scheme=SCHEMES[choice.scheme], group_size=choice.group_size,
                                      ignore=list(choice.kept), layers=heads)  # fmt: skip
    (staging / "config.json").write_text(json.dumps({**config, "quantization_config": quant}, indent=2) + "\n")


def _copy_others(source: Path, staging: Path) -> None:
    """The tokenizer, generation config, chat template and whatever else sits beside the weights."""
    for path in sorted(source.iterdir()):
        if path.is_file() and path.name not in ("config.json", INDEX_NAME) and not path.name.endswith(WEIGHT_FILES):
            shutil.copy2(path, staging / path.name)
