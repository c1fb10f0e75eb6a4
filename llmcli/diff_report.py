"""`llmcli diff A B`: two models side by side from their files alone (config, tensors, totals)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmcli.modelfs.config import show_value
from llmcli.output import KV, Para, Section, Table

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


def diff_models(a: tuple[Path, str], b: tuple[Path, str]) -> tuple[dict[str, Any], list[Section]]:
    left, right = _side(*a), _side(*b)
    fa, fb = _flatten(left["config"]), _flatten(right["config"])
    config_changes = [
        {"key": k, "a": fa.get(k), "b": fb.get(k), "only_in": "a" if k not in fb else "b" if k not in fa else None}
        for k in sorted(set(fa) | set(fb))
        if k not in IGNORED_KEYS and fa.get(k, MISSING) != fb.get(k, MISSING)
    ]
    ta, tb = left["tensors"], right["tensors"]
    only_a = sorted(set(ta) - set(tb))
    only_b = sorted(set(tb) - set(ta))
    changed = [
        {"name": n, "a": {"dtype": ta[n][0], "shape": ta[n][1]}, "b": {"dtype": tb[n][0], "shape": tb[n][1]}}
        for n in sorted(set(ta) & set(tb))
        if ta[n] != tb[n]
    ]
    same = len(set(ta) & set(tb)) - len(changed)
    data = {
        "a": {"path": str(a[0]), "format": left["format"], "parameters": left["parameters"], "tensors": len(ta)},
        "b": {"path": str(b[0]), "format": right["format"], "parameters": right["parameters"], "tensors": len(tb)},
        "config": config_changes,
        "tensors_only_in_a": only_a,
        "tensors_only_in_b": only_b,
        "tensors_changed": changed,
        "tensors_same": same,
        "identical": not (config_changes or only_a or only_b or changed),
    }

    def num(n: int | None) -> str:
        return "n/a (no weights)" if n is None else f"{n:,}"

    sections = [
        Section(
            "Models",
            [
                KV(
                    [
                        (
                            "A",
                            str(a[0]),
                            f"{left['format']}, {len(ta):,} tensors, {num(left['parameters'])} parameters",
                        ),
                        (
                            "B",
                            str(b[0]),
                            f"{right['format']}, {len(tb):,} tensors, {num(right['parameters'])} parameters",
                        ),
                    ]
                )
            ],
        ),
        Section(
            f"Config: {len(config_changes)} difference(s)",
            [
                Table(
                    ["key", "A", "B"],
                    [
                        [
                            c["key"],
                            "—" if c["only_in"] == "b" else show_value(c["a"], 50),
                            "—" if c["only_in"] == "a" else show_value(c["b"], 50),
                        ]
                        for c in config_changes
                    ],
                )
            ]
            if config_changes
            else [Para("identical", "ok")],
        ),
    ]
    blocks: list[Any] = [Para(f"{same:,} tensors identical in name, dtype and shape", "dim")]
    if changed:
        blocks.append(
            Table(
                ["tensor", "A", "B"],
                [
                    [c["name"], f"{c['a']['dtype']} {c['a']['shape']}", f"{c['b']['dtype']} {c['b']['shape']}"]
                    for c in changed
                ],
            )
        )
    for label, names in (("only in A", only_a), ("only in B", only_b)):
        if names:
            shown = ", ".join(names[:8]) + (f" … (+{len(names) - 8})" if len(names) > 8 else "")
            blocks.append(Para(f"{len(names):,} tensor(s) {label}: {shown}", "warn"))
    if left["format"] != right["format"] and "gguf" in (left["format"], right["format"]):
        blocks.append(Para("GGUF and transformers name tensors differently: compare like with like", "dim"))
    sections.append(Section("Tensors", blocks))
    sections.append(
        Section(
            "Verdict", [Para("identical" if data["identical"] else "different", "ok" if data["identical"] else "warn")]
        )
    )
    return data, sections
