"""inspect's "Remote code" section: every file `--trust-remote-code` would execute, its SHA-256 and imports,
and the digest to pin (modelfs.remote_code reads them; nothing is imported)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmcli.output import Para, Section, Table


def remote_code_section(model_dir: Path) -> tuple[dict[str, Any], Section] | None:
    from llmcli.modelfs.remote_code import find_remote_code, remember_digest

    code = find_remote_code(model_dir)
    if code is None:
        return None
    remember_digest(code)
    rows = [[f.path, f"{f.bytes:,}", f.sha256[:16], ", ".join(f.imports)] for f in code.files]
    blocks: list[Any] = []
    if rows:
        blocks.append(Table(["file", "bytes", "sha256", "imports"], rows, numeric={1}))
        blocks.append(Para(f"digest {code.digest}: run it only as it is now with --trust-remote-code-digest "
                           f"{code.digest}"))  # fmt: skip
    for entry in code.external:
        blocks.append(Para(f"auto_map names code in another repository: {entry} (not in this directory)", "warn"))
    for module in code.missing:
        blocks.append(Para(f"auto_map names {module}.py, which is not in the directory", "warn"))
    blocks.append(Para("llmcli runs none of it without --trust-remote-code (or a matching digest)", "dim"))
    return code.as_json(), Section("Remote code (what --trust-remote-code would run)", blocks)
