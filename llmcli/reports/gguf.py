"""`inspect FILE.gguf`: GGUF metadata, quantization types, tokenizer and tensor table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmcli.modelfs.config import show_value
from llmcli.modelfs.gguf_file import read_gguf
from llmcli.output import KV, Para, Section, Table
from llmcli.reports import Report, counted
from llmcli.units import human_bytes

# Suffixes of "<arch>.<key>" metadata worth naming in plain words.
ARCH_KEYS = [
    ("context_length", "context length (tokens)"),
    ("embedding_length", "hidden size"),
    ("block_count", "layers"),
    ("feed_forward_length", "MLP width"),
    ("attention.head_count", "query heads"),
    ("attention.head_count_kv", "KV heads"),
    ("rope.freq_base", "RoPE base frequency"),
    ("attention.layer_norm_rms_epsilon", "RMSNorm epsilon"),
    ("vocab_size", "vocabulary"),
]


def build(path: Path, *, tensors: bool = False) -> Report:
    info = read_gguf(path)
    meta = info.metadata
    arch = meta.get("general.architecture") if isinstance(meta.get("general.architecture"), str) else "?"
    total = sum(t.numel for t in info.tensors)
    by_type: dict[str, dict[str, int]] = {}
    for t in info.tensors:
        entry = by_type.setdefault(t.qtype, {"tensors": 0, "parameters": 0, "bytes": 0})
        entry["tensors"] += 1
        entry["parameters"] += t.numel
        entry["bytes"] += t.nbytes
    tokenizer = _tokenizer(meta)
    checks: list[str] = [] if info.truncation is None else [f"{info.truncation}: it cannot load"]
    data = {
        "path": str(path),
        "format": "gguf",
        "gguf_version": info.version,
        "architecture": arch,
        "metadata": meta,
        "tokenizer": tokenizer,
        "quantization": by_type,
        "parameters": {"total": total, "source": "gguf tensors"},
        "tensor_bytes": sum(t.nbytes for t in info.tensors),
        "checks": checks,
    }
    general = [(k.split(".", 1)[1], show_value(v), "") for k, v in meta.items() if k.startswith("general.")]
    arch_rows = [(s, show_value(meta[f"{arch}.{s}"]), note) for s, note in ARCH_KEYS if f"{arch}.{s}" in meta]
    other = [
        (k, show_value(v), "") for k, v in meta.items() if not k.startswith(("general.", f"{arch}.", "tokenizer."))
    ]
    quant_rows = [
        [q, f"{e['tensors']:,}", f"{e['parameters']:,}", human_bytes(e["bytes"])] for q, e in sorted(by_type.items())
    ]
    sections = [
        Section(f"GGUF v{info.version} ({path})", [KV(general + [("parameters", counted(total), "sum of tensors")])]),
        Section(f"Architecture ({arch})", [KV(arch_rows + other)] if arch_rows or other else [Para("none", "dim")]),
        Section("Quantization", [Table(["type", "tensors", "parameters", "bytes"], quant_rows, numeric={1, 2, 3})]),
        Section("Tokenizer", [KV(_tokenizer_rows(tokenizer, meta.get("tokenizer.chat_template")))]),
    ]
    if tensors:
        data["tensors"] = [{"name": t.name, "type": t.qtype, "shape": t.shape, "bytes": t.nbytes} for t in info.tensors]
        rows = [[t.name, t.qtype, str(t.shape), f"{t.nbytes:,}"] for t in info.tensors]
        sections.append(Section("Tensors", [Table(["tensor", "type", "shape", "bytes"], rows, numeric={3})]))
    sections.append(Section("Checks", [Para(c, "warn") for c in checks] or [Para("no problems found", "ok")]))
    return Report(data, sections)


def _tokenizer(meta: dict[str, Any]) -> dict[str, Any]:
    tokens = meta.get("tokenizer.ggml.tokens")
    vocab = tokens["array_length"] if isinstance(tokens, dict) else (len(tokens) if isinstance(tokens, list) else None)
    return {
        "model": meta.get("tokenizer.ggml.model"),
        "vocab_size": vocab,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "chat_template": isinstance(meta.get("tokenizer.chat_template"), str),
    }


def _tokenizer_rows(tokenizer: dict[str, Any], template: Any) -> list[tuple[str, str, str]]:
    vocab = tokenizer["vocab_size"]
    return [
        ("model", show_value(tokenizer["model"]), "GGUF tokenizer kind"),
        ("vocab size", f"{vocab:,}" if vocab else "?", ""),
        ("bos / eos ids", f"{tokenizer['bos_token_id']} / {tokenizer['eos_token_id']}", ""),
        ("chat template", "yes" if tokenizer["chat_template"] else "no", show_value(template, 60) if template else ""),
    ]
