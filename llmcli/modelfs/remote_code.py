"""What `--trust-remote-code` would run: the Python files a model directory's auto_map names (config.json and
tokenizer_config.json), and the files they import relatively, transitively; each with its size, SHA-256 and
top-level imports, and one digest over the set. Read with `ast`: nothing here imports or runs the files.

Also the config keys that make other loaders import code without any flag (mlx-lm's `model_file`), refused.
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmcli.errors import LlmcliError

CONFIG_FILES = ("config.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json")
# Keys that name code a loader imports from the directory with no --trust-remote-code: mlx-lm loaded the
# module `model_file` named; transformers' pipelines load `custom_pipelines` implementations.
CODE_LOADING_KEYS = ("model_file", "custom_pipelines")


@dataclass
class CodeFile:
    path: str  # relative to the model directory
    sha256: str
    bytes: int
    imports: list[str] = field(default_factory=list)  # top-level modules it imports (absolute imports)

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "bytes": self.bytes, "imports": self.imports}


@dataclass
class RemoteCode:
    files: list[CodeFile]
    digest: str | None  # over the sorted (path, sha256) pairs; None without local files
    external: list[str]  # auto_map entries in another repository (org/name--module.Class)
    missing: list[str]  # modules named that are not in the directory

    def as_json(self) -> dict[str, Any]:
        return {"files": [f.as_json() for f in self.files], "digest": self.digest, "external": self.external,
                "missing": self.missing}  # fmt: skip


def _auto_map_entries(model_dir: Path) -> list[str]:
    entries: list[str] = []
    for name in CONFIG_FILES:
        path = model_dir / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        values = list(data["auto_map"].values()) if isinstance(data.get("auto_map"), dict) else []
        pipelines = data.get("custom_pipelines")
        if isinstance(pipelines, dict):  # {"task": {"impl": "module.Class", ...}}
            values += [p.get("impl") for p in pipelines.values() if isinstance(p, dict)]
        if isinstance(data.get("model_file"), str):  # mlx-lm's: a .py file of the directory
            values.append(data["model_file"].removesuffix(".py").replace("/", ".") + ".Model")
        for value in values:
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str) and item:
                    entries.append(item)
    return entries


def _module_file(model_dir: Path, module: str) -> Path:
    return model_dir.joinpath(*module.split(".")).with_suffix(".py")


def _relative_imports(tree: ast.AST, module: str) -> tuple[list[str], list[str]]:
    """(modules in this directory it imports relatively, top-level modules it imports absolutely)."""
    package = module.split(".")[:-1]
    local, absolute = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            absolute.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                absolute.add((node.module or "").split(".")[0])
                continue
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            if node.module:
                local.append(".".join([*base, node.module]))
            else:  # from . import a, b: each may be a module of the directory
                local += [".".join([*base, alias.name]) for alias in node.names]
    return local, sorted(a for a in absolute if a)


def find_remote_code(model_dir: Path) -> RemoteCode | None:
    """None when nothing in the directory asks for custom code."""
    entries = _auto_map_entries(model_dir)
    if not entries:
        return None
    external = sorted({e for e in entries if "--" in e})
    queue = sorted({e.rsplit(".", 1)[0] for e in entries if "--" not in e and "." in e})
    seen: dict[str, CodeFile] = {}
    missing: list[str] = []
    while queue:
        module = queue.pop(0)
        path = _module_file(model_dir, module)
        rel = path.relative_to(model_dir).as_posix()
        if rel in seen or module in missing:
            continue
        if not path.is_file():
            if not _module_file(model_dir, module + ".__init__").is_file():
                missing.append(module)
            continue
        raw = path.read_bytes()
        try:
            tree = ast.parse(raw, filename=rel)
        except (SyntaxError, ValueError):
            tree = ast.Module(body=[], type_ignores=[])
        local, absolute = _relative_imports(tree, module)
        seen[rel] = CodeFile(rel, hashlib.sha256(raw).hexdigest(), len(raw), absolute)
        queue += [m for m in local if m not in queue]
    files = sorted(seen.values(), key=lambda f: f.path)
    return RemoteCode(files, code_digest(files) if files else None, external, sorted(set(missing)))


def code_digest(files: list[CodeFile]) -> str:
    blob = "".join(f"{f.path}\0{f.sha256}\n" for f in sorted(files, key=lambda f: f.path))
    return hashlib.sha256(blob.encode()).hexdigest()


def refuse_code_loading_keys(model_dir: Path) -> None:
    """A config key through which other loaders import the directory's code without being asked."""
    for name in CONFIG_FILES:
        path = model_dir / name
        try:
            data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        for key in CODE_LOADING_KEYS:
            if key in data:
                raise LlmcliError(
                    f"'{key}' names Python code to import, a way other loaders ran a model's code without being "
                    "asked; llmcli refuses such a directory",
                    path=path,
                )


# ---------------------------------------------------------------- pinning


PINS = "remote-code-pins.json"


def remember_digest(code: RemoteCode) -> None:
    """Which files made a digest, so that a pin that no longer matches can say which of them changed."""
    from llmcli.modelfs.memo import read_memo, write_memo

    if code.digest is None:
        return
    known = read_memo(PINS)
    known[code.digest] = {f.path: f.sha256 for f in code.files}
    write_memo(PINS, known)


def differences(pinned: str, code: RemoteCode) -> str:
    """The files that differ from what `pinned` was made of, when llmcli saw that digest; else every file."""
    from llmcli.modelfs.memo import read_memo

    known = read_memo(PINS).get(pinned)
    now = {f.path: f.sha256 for f in code.files}
    if not isinstance(known, dict):
        return "the files that would run: " + ", ".join(f"{p} ({h[:12]})" for p, h in sorted(now.items()))
    changed = [p for p in sorted(set(known) | set(now)) if known.get(p) != now.get(p)]
    words = [f"{p} ({'added' if p not in known else 'removed' if p not in now else 'changed'})" for p in changed]
    return "differing: " + ", ".join(words)


def check_pin(model_dir: Path, pinned: str) -> RemoteCode:
    """--trust-remote-code-digest: the code that would run must hash to `pinned`, before any of it is imported."""
    code = find_remote_code(model_dir)
    if code is None or code.digest is None:
        raise LlmcliError("--trust-remote-code-digest: this model names no code of its own to run", path=model_dir)
    if code.external:
        raise LlmcliError(f"auto_map names code in another repository ({', '.join(code.external)}): it cannot be "
                          "pinned here", path=model_dir / "config.json")  # fmt: skip
    if code.digest != pinned.strip().lower():
        raise LlmcliError(
            f"the remote code's digest is {code.digest}, not the pinned {pinned}; {differences(pinned, code)}",
            path=model_dir,
        )
    return code
