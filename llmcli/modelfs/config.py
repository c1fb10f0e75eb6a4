"""config.json read, validated and explained: what each number means for the model's shape."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmcli.errors import LlmcliError
from llmcli.modelfs.files import read_json_object

# (group, key, explanation). Order is display order; anything not listed goes under "Other keys".
KNOWN_KEYS: list[tuple[str, str, str]] = [
    ("Architecture", "architectures", "model class transformers builds"),
    ("Architecture", "model_type", "architecture family"),
    ("Architecture", "transformers_version", "transformers release that wrote this file"),
    ("Size", "hidden_size", "width of every token vector (d_model)"),
    ("Size", "num_hidden_layers", "decoder blocks stacked (attention + MLP each)"),
    ("Size", "intermediate_size", "MLP width: up-projection from hidden_size and back"),
    ("Size", "vocab_size", "rows of the embedding and columns of lm_head"),
    ("Attention", "num_attention_heads", "query heads per layer"),
    ("Attention", "num_key_value_heads", "key/value heads per layer (fewer than query heads: GQA)"),
    ("Attention", "head_dim", "width of one attention head"),
    ("Attention", "attention_bias", "q/k/v/o projections carry a bias"),
    ("Attention", "attention_dropout", "dropout on attention weights (training only)"),
    ("Attention", "use_sliding_window", "attend only within a window of recent tokens"),
    ("Attention", "sliding_window", "window size when sliding-window attention is on"),
    ("Attention", "max_window_layers", "layers that use full attention before sliding windows start"),
    ("Position", "max_position_embeddings", "longest context the model was built for, in tokens"),
    ("Position", "rope_theta", "RoPE base frequency: larger stretches positions over longer contexts"),
    ("Position", "rope_scaling", "RoPE extension for contexts longer than training (YaRN, linear, ...)"),
    ("Position", "rope_parameters", "RoPE settings (base frequency and scaling)"),
    ("Position", "use_mrope", "multimodal RoPE (sections for time/height/width)"),
    ("Norm and activation", "rms_norm_eps", "epsilon inside RMSNorm (scales by root-mean-square)"),
    ("Norm and activation", "layer_norm_eps", "epsilon inside LayerNorm"),
    ("Norm and activation", "hidden_act", "MLP activation function"),
    ("Norm and activation", "mlp_bias", "MLP projections carry a bias"),
    ("Embeddings", "tie_word_embeddings", "lm_head shares the embedding matrix (stored once)"),
    ("Tokens", "bos_token_id", "beginning-of-sequence token id"),
    ("Tokens", "eos_token_id", "end-of-sequence token id(s): generation stops here"),
    ("Tokens", "pad_token_id", "padding token id"),
    ("Precision", "torch_dtype", "dtype the weights were saved in"),
    ("Precision", "dtype", "dtype the weights were saved in"),
    ("Precision", "quantization_config", "the weights are quantized; method and settings"),
    ("Runtime", "use_cache", "keep past keys/values (KV cache) while generating"),
    ("Runtime", "initializer_range", "std of the truncated normal used to initialise weights"),
]
GROUPS = list(dict.fromkeys(g for g, _, _ in KNOWN_KEYS))
EXPLAIN = {key: (group, note) for group, key, note in KNOWN_KEYS}
# Limits beyond which a config is not a plausible model; they keep derived figures and meta builds bounded.
MAX_DIM = 1 << 22
MAX_LAYERS = 4096


def load_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    if not path.is_file():
        raise LlmcliError("no config.json: not a Hugging Face model directory", path=model_dir)
    return read_json_object(path, max_bytes=5 * 1024 * 1024, what="config.json")


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    """Multimodal configs nest the language model's settings; the figures come from there."""
    nested = config.get("text_config")
    if isinstance(nested, dict):
        merged = dict(config)
        merged.update(nested)
        return merged
    return config


def _int(config: dict[str, Any], key: str, problems: list[str], limit: int = MAX_DIM) -> int | None:
    value = config.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer() and 0 < value <= limit:
            return int(value)
        problems.append(f"config.json: {key} is {json.dumps(value, default=str)[:40]}, not a whole number")
        return None
    if value <= 0 or value > limit:
        problems.append(f"config.json: {key} = {value} is out of range (1..{limit})")
        return None
    return value


@dataclass
class Geometry:
    """The shape figures derived from a config; None where the config does not say or is wrong."""

    hidden: int | None
    layers: int | None
    intermediate: int | None
    heads: int | None
    kv_heads: int | None
    head_dim: int | None
    vocab: int | None
    context: int | None
    tied: bool
    rope_theta: float | None
    dtype: str | None
    problems: list[str]

    @property
    def gqa_group(self) -> int | None:
        if self.heads and self.kv_heads and self.heads % self.kv_heads == 0:
            return self.heads // self.kv_heads
        return None


def geometry(config: dict[str, Any]) -> Geometry:
    cfg = text_config(config)
    problems: list[str] = []
    hidden = _int(cfg, "hidden_size", problems) or _int(cfg, "n_embd", problems) or _int(cfg, "d_model", problems)
    layers = _int(cfg, "num_hidden_layers", problems, MAX_LAYERS) or _int(cfg, "n_layer", problems, MAX_LAYERS)
    heads = _int(cfg, "num_attention_heads", problems) or _int(cfg, "n_head", problems)
    kv_heads = _int(cfg, "num_key_value_heads", problems)
    if kv_heads is None and heads is not None and "num_key_value_heads" not in cfg:
        kv_heads = heads
    head_dim = _int(cfg, "head_dim", problems)
    if head_dim is None and hidden and heads:
        head_dim = hidden // heads if hidden % heads == 0 else None
    if heads and kv_heads and heads % kv_heads:
        problems.append(
            f"config.json: num_attention_heads ({heads}) is not a multiple of num_key_value_heads ({kv_heads})"
        )
    rope = cfg.get("rope_theta")
    if rope is None and isinstance(cfg.get("rope_parameters"), dict):
        rope = cfg["rope_parameters"].get("rope_theta")
    if not isinstance(rope, (int, float)) or isinstance(rope, bool) or not math.isfinite(rope) or rope <= 0:
        rope = None
    dtype = cfg.get("torch_dtype", cfg.get("dtype"))
    tied = cfg.get("tie_word_embeddings", True)
    return Geometry(
        hidden=hidden,
        layers=layers,
        intermediate=_int(cfg, "intermediate_size", problems) or _int(cfg, "n_inner", problems),
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        vocab=_int(cfg, "vocab_size", problems, 1 << 24),
        context=_int(cfg, "max_position_embeddings", problems, 1 << 30) or _int(cfg, "n_positions", problems, 1 << 30),
        tied=tied if isinstance(tied, bool) else True,
        rope_theta=float(rope) if rope is not None else None,
        dtype=dtype if isinstance(dtype, str) else None,
        problems=problems,
    )


def show_value(value: Any, limit: int = 80) -> str:
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (ValueError, RecursionError):
            text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def derived_rows(geo: Geometry) -> list[tuple[str, str, str]]:
    """Figures the config implies but does not state, e.g. the GQA sharing and k/v projection width."""
    rows: list[tuple[str, str, str]] = []
    if geo.heads and geo.kv_heads and geo.gqa_group:
        if geo.gqa_group == 1:
            rows.append(("GQA", "none (multi-head attention)", "every query head has its own key/value head"))
        else:
            rows.append(
                (
                    "GQA ratio",
                    f"{geo.gqa_group}:1",
                    f"{geo.heads} query heads share {geo.kv_heads} KV heads, {geo.gqa_group} per group",
                )
            )
    if geo.hidden and geo.heads and geo.kv_heads and geo.head_dim:
        q_out = geo.heads * geo.head_dim
        kv_out = geo.kv_heads * geo.head_dim
        rows.append(("q_proj", f"{geo.hidden}→{q_out}", f"{geo.heads} heads × head_dim {geo.head_dim}"))
        rows.append(("k/v_proj", f"{geo.hidden}→{kv_out}", f"{geo.kv_heads} KV heads × head_dim {geo.head_dim}"))
    if geo.hidden and geo.intermediate:
        rows.append(
            ("MLP expansion", f"{geo.intermediate / geo.hidden:.2f}×", f"{geo.hidden}→{geo.intermediate}→{geo.hidden}")
        )
    return rows


def config_view(config: dict[str, Any]) -> tuple[list[tuple[str, list[tuple[str, str, str]]]], Geometry]:
    """Config rows grouped for display, derived figures included, unknown keys kept under 'Other keys'."""
    cfg = text_config(config)
    geo = geometry(config)
    groups: dict[str, list[tuple[str, str, str]]] = {g: [] for g in GROUPS}
    other: list[tuple[str, str, str]] = []
    for key, value in cfg.items():
        if key == "text_config":
            continue
        if key in EXPLAIN:
            group, note = EXPLAIN[key]
            groups[group].append((key, show_value(value), note))
        else:
            other.append((key, show_value(value), ""))
    if "head_dim" not in cfg and geo.head_dim:
        groups["Attention"].append(("head_dim", str(geo.head_dim), "hidden_size / num_attention_heads (derived)"))
    groups["Attention"].extend(derived_rows(geo))
    ordered = [(g, rows) for g, rows in groups.items() if rows]
    if other:
        ordered.append(("Other keys", other))
    return ordered, geo
