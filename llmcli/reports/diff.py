"""`llmcli diff A B`: two models side by side from their files alone (config, tensors, totals)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmcli.modelfs.config import show_value
from llmcli.output import KV, Para, Section, Table
from llmcli.reports import Report

MISSING = object()


def _side(path: Path, kind: str) -> dict[str, Any]:
    """Config and a tensor table {name: (dtype, shape)} for a directory or a GGUF file."""
    if kind == "gguf":
        from llmcli.modelfs.gguf_file import read_gguf

        info = read_gguf(path)
        return {
            "config": info.metadata,
            "tensors": {t.name: (t.qtype, t.shape) for t in info.tensors},
            "parameters": sum(t.numel for t in info.tensors),
            "format": "gguf",
        }
    from llmcli.modelfs.checkpoint import read_checkpoint
    from llmcli.modelfs.config import load_config

    config = load_config(path)
    ckpt = read_checkpoint(path)
    return {
        "config": config,
        "tensors": {n: (t.dtype, t.shape) for n, t in ckpt.tensors.items()},
        "parameters": ckpt.parameters if ckpt.tensors else None,
        "format": ckpt.kind,
    }


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


IGNORED_KEYS = {"transformers_version", "_name_or_path", "_model_name_or_path"}


def build(a: tuple[Path, str], b: tuple[Path, str]) -> Report:
    """`a` and `b` are (path, kind) as `locate()` names them."""
    left, right = _side(*a), _side(*b)
    fa, fb = _flatten(left["config"]), _flatten(right["config"])
    config_changes = [
        {"key": k, "a": fa.get(k), "b": fb.get(k), "only_in": "a" if k not in fb else "b" if k not in fa else None}
        for k in sorted(set(fa) | set(fb))
        if k not in IGNORED_KEYS and fa.get(k, MISSING) != fb.get(k, MISSING)
    ]
    ta, tb = left["tensors"], right["tensors"]
    changed = [
        {"name": n, "a": {"dtype": ta[n][0], "shape": ta[n][1]}, "b": {"dtype": tb[n][0], "shape": tb[n][1]}}
        for n in sorted(set(ta) & set(tb))
        if ta[n] != tb[n]
    ]
    data = {
        "a": {"path": str(a[0]), "format": left["format"], "parameters": left["parameters"], "tensors": len(ta)},
        "b": {"path": str(b[0]), "format": right["format"], "parameters": right["parameters"], "tensors": len(tb)},
        "config": config_changes,
        "tensors_only_in_a": sorted(set(ta) - set(tb)),
        "tensors_only_in_b": sorted(set(tb) - set(ta)),
        "tensors_changed": changed,
        "tensors_same": len(set(ta) & set(tb)) - len(changed),
    }
    data["identical"] = not (config_changes or data["tensors_only_in_a"] or data["tensors_only_in_b"] or changed)
    sections = [_models_section(data), _config_section(config_changes), _tensors_section(data)]
    verdict = Para("identical" if data["identical"] else "different", "ok" if data["identical"] else "warn")
    sections.append(Section("Verdict", [verdict]))
    return Report(data, sections)


def _models_section(data: dict[str, Any]) -> Section:
    def row(label: str, side: dict[str, Any]) -> tuple[str, str, str]:
        params = "n/a (no weights)" if side["parameters"] is None else f"{side['parameters']:,}"
        return label, side["path"], f"{side['format']}, {side['tensors']:,} tensors, {params} parameters"

    return Section("Models", [KV([row("A", data["a"]), row("B", data["b"])])])


def _config_section(changes: list[dict[str, Any]]) -> Section:
    if not changes:
        return Section("Config: 0 difference(s)", [Para("identical", "ok")])
    rows = [
        [
            c["key"],
            "—" if c["only_in"] == "b" else show_value(c["a"], 50),
            "—" if c["only_in"] == "a" else show_value(c["b"], 50),
        ]
        for c in changes
    ]
    return Section(f"Config: {len(changes)} difference(s)", [Table(["key", "A", "B"], rows)])


def _tensors_section(data: dict[str, Any]) -> Section:
    blocks: list[Any] = [Para(f"{data['tensors_same']:,} tensors identical in name, dtype and shape", "dim")]
    if data["tensors_changed"]:
        rows = [
            [c["name"], f"{c['a']['dtype']} {c['a']['shape']}", f"{c['b']['dtype']} {c['b']['shape']}"]
            for c in data["tensors_changed"]
        ]
        blocks.append(Table(["tensor", "A", "B"], rows))
    for label, names in (("only in A", data["tensors_only_in_a"]), ("only in B", data["tensors_only_in_b"])):
        if names:
            shown = ", ".join(names[:8]) + (f" … (+{len(names) - 8})" if len(names) > 8 else "")
            blocks.append(Para(f"{len(names):,} tensor(s) {label}: {shown}", "warn"))
    formats = (data["a"]["format"], data["b"]["format"])
    if formats[0] != formats[1] and "gguf" in formats:
        blocks.append(Para("GGUF and transformers name tensors differently: compare like with like", "dim"))
    return Section("Tensors", blocks)
