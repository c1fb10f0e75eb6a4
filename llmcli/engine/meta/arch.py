"""The architecture's own view: the model built from config on torch's meta device (no memory, no weights).

Imports torch and transformers, so only the sections that need it call in here.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmcli.errors import squash
from llmcli.modelfs.config import MAX_DIM, MAX_LAYERS, Geometry
from llmcli.quiet import quiet_transformers


class ArchUnavailable(Exception):
    """transformers cannot build this architecture; the reason says why."""


def native_model_type(config: dict[str, Any]) -> bool:
    """Whether transformers has its own classes for this model_type, which it uses when remote code is not
    trusted, even when config.json's auto_map names custom code."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return config.get("model_type") in CONFIG_MAPPING_NAMES


CUSTOM_CODE_NOT_USED = (
    "config.json's auto_map names custom code; transformers' own {cls} was used instead (never the custom code)"
)


def build_meta_model(model_dir: Path, config: dict[str, Any], geo: Geometry) -> Any:
    """The model with every parameter on the meta device. Never runs code from the directory."""
    if geo.problems:
        raise ArchUnavailable(geo.problems[0])
    if (geo.layers or 0) > MAX_LAYERS or (geo.hidden or 0) > MAX_DIM:
        raise ArchUnavailable("sizes in config.json are implausibly large")
    if "auto_map" in config and not native_model_type(config):
        raise ArchUnavailable("config.json asks for custom code (auto_map), which llmcli never runs")
    quiet_transformers()
    import torch
    import transformers

    try:
        hf_config = transformers.AutoConfig.from_pretrained(str(model_dir), trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - any config transformers rejects means "cannot build"
        raise ArchUnavailable(f"transformers cannot read this config: {squash(exc, 200)}") from None
    archs = config.get("architectures")
    names = [a for a in archs if isinstance(a, str)] if isinstance(archs, list) else []
    candidates = [getattr(transformers, n) for n in names if hasattr(transformers, n)]
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if candidates:
                return candidates[0]._from_config(hf_config)
            try:
                return transformers.AutoModelForCausalLM.from_config(hf_config)
            except ValueError:
                return transformers.AutoModel.from_config(hf_config)
    except Exception as exc:  # noqa: BLE001
        raise ArchUnavailable(f"transformers cannot build it: {squash(exc, 200)}") from None


@dataclass
class ParamReport:
    total: int
    embedding: int
    non_embedding: int
    tied_groups: list[list[str]]
    first_owner: dict[str, int] = field(default_factory=dict)  # unique parameter name -> numel


def count_parameters(model: Any) -> ParamReport:
    owners: dict[int, list[str]] = {}
    numel: dict[int, int] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(p), []).append(name)
        numel[id(p)] = p.numel()
    first_owner = {names[0]: numel[pid] for pid, names in owners.items()}
    total = sum(first_owner.values())
    embedding_ids: set[int] = set()
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        try:
            module = getattr(model, getter)()
        except (AttributeError, NotImplementedError):
            module = None
        weight = getattr(module, "weight", None) if module is not None else None
        if weight is not None:
            embedding_ids.add(id(weight))
    embedding = sum(numel[i] for i in embedding_ids if i in numel)
    tied = [names for names in owners.values() if len(names) > 1]
    return ParamReport(total, embedding, total - embedding, tied, first_owner)


def _leaf_detail(module: Any) -> str:
    cls = type(module).__name__
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        bias = getattr(module, "bias", None) is not None
        return f"{module.in_features}→{module.out_features}" + (", bias" if bias else ", no bias")
    if hasattr(module, "num_embeddings") and hasattr(module, "embedding_dim"):
        return f"{module.num_embeddings}×{module.embedding_dim}"
    shapes = [f"{n} {tuple(p.shape)}" for n, p in module.named_parameters(recurse=False)]
    if shapes:
        return ", ".join(shapes)
    return "" if list(module.children()) else ("no parameters" if cls else "")


def _signature(module: Any) -> tuple:
    return (
        type(module).__name__,
        tuple((n, tuple(p.shape)) for n, p in module.named_parameters(remove_duplicate=False)),
    )


def module_tree(model: Any, params: ParamReport) -> dict[str, Any]:
    """Nested dicts: class, parameters (tied counted once), share, detail, repeated blocks collapsed."""
    tied_to: dict[str, str] = {}
    for names in params.tied_groups:
        for other in names[1:]:
            tied_to[other] = names[0]
    owned = list(params.first_owner.items())

    def count(prefix: str) -> int:
        if not prefix:
            return params.total
        dotted = prefix + "."
        return sum(n for name, n in owned if name.startswith(dotted))

    def node(module: Any, name: str, path: str, repeat: int = 1) -> dict[str, Any]:
        children = list(module.named_children())
        n = count(path) * repeat if repeat > 1 else count(path)
        entry: dict[str, Any] = {
            "name": name,
            "path": path,
            "class": type(module).__name__,
            "parameters": n,
            "share": (n / params.total) if params.total else 0.0,
            "detail": _leaf_detail(module),
        }
        if repeat > 1:
            entry["repeat"] = repeat
        ties = [
            f"{pn} tied to {tied_to[f'{path}.{pn}' if path else pn]}"
            for pn, _ in module.named_parameters(recurse=False, remove_duplicate=False)
            if (f"{path}.{pn}" if path else pn) in tied_to
        ]
        if ties:
            entry["tied"] = ties
        kids: list[dict[str, Any]] = []
        is_list = type(module).__name__ in ("ModuleList", "Sequential") and all(c[0].isdigit() for c in children)
        if is_list and children:
            i = 0
            while i < len(children):
                j = i
                sig = _signature(children[i][1])
                while j + 1 < len(children) and _signature(children[j + 1][1]) == sig:
                    j += 1
                first_name, first_mod = children[i]
                label = f"{name}.{first_name}" if i == j else f"{name}.{first_name}–{children[j][0]}"
                child_path = f"{path}.{first_name}" if path else first_name
                kids.append(node(first_mod, label, child_path, repeat=j - i + 1))
                i = j + 1
            entry["collapsed_list"] = True
        else:
            for cname, cmod in children:
                child = node(cmod, cname, f"{path}.{cname}" if path else cname)
                # A ModuleList is only a container: show its (collapsed) blocks in its place.
                kids.extend(child["children"] if child.get("collapsed_list") else [child])
        entry["children"] = kids
        return entry

    return node(model, type(model).__name__, "")


def architecture_checks(model: Any, tensors: dict[str, Any]) -> list[str]:
    """Parameters the architecture expects that the checkpoint lacks, unused tensors, shape mismatches."""
    state = model.state_dict(keep_vars=True)
    groups: dict[int, list[str]] = {}
    for name, value in state.items():
        groups.setdefault(id(value), []).append(name)
    checks = []
    missing = []
    expected_names = set(state)
    for names in groups.values():
        present = [n for n in names if n in tensors]
        if not present:
            missing.append(names[0])
            continue
        want = tuple(state[names[0]].shape)
        for n in present:
            got = tuple(tensors[n].shape)
            if got != want:
                checks.append(f"tensor {n} has shape {list(got)}, the architecture expects {list(want)}")
    unused = sorted(set(tensors) - expected_names)
    if missing:
        checks.append(
            f"checkpoint lacks {len(missing)} parameter(s) the architecture expects: {', '.join(sorted(missing)[:3])}"
            + (" …" if len(missing) > 3 else "")
        )
    if unused:
        checks.append(
            f"checkpoint has {len(unused)} tensor(s) the architecture does not use: {', '.join(unused[:3])}"
            + (" …" if len(unused) > 3 else "")
        )
    return checks
