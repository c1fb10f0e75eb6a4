"""Code shipped in a model directory runs only when the user says so: --trust-remote-code, or a pinned
digest of exactly the files that would run; without either, transformers' own classes or a refusal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmcli.errors import LlmcliError
from llmcli.plan import LoadSpec


def trusts_code(spec: LoadSpec) -> bool:
    return spec.trust_remote_code or spec.trust_remote_code_digest is not None


def check_remote_code(config: dict[str, Any], model_dir: Path, spec: LoadSpec) -> None:
    """Before anything of the directory is imported: a pinned digest must match the files that would run;
    --trust-remote-code alone says which digest they have, to pin it next time; without either, no code."""
    from llmcli.modelfs.remote_code import check_pin, find_remote_code, refuse_code_loading_keys, remember_digest

    if not trusts_code(spec):
        refuse_code_loading_keys(model_dir)
        refuse_custom_code(config, model_dir, False)
        return
    if spec.trust_remote_code_digest is not None:
        remember_digest(check_pin(model_dir, spec.trust_remote_code_digest))
        return
    code = find_remote_code(model_dir)
    if code is not None and code.digest is not None:
        from llmcli.output import warn

        remember_digest(code)
        warn(f"running the code of {len(code.files)} file(s) in {model_dir}, digest {code.digest} "
             f"(pin it: --trust-remote-code-digest {code.digest})")  # fmt: skip


def refuse_custom_code(config: dict[str, Any], model_dir: Path, trust_remote_code: bool) -> None:
    """Code shipped in a model directory runs only when the user says so on the command line. Without it,
    a model_type that transformers knows loads through transformers' own classes, as transformers does."""
    if "auto_map" in config and not trust_remote_code:
        from llmcli.engine.meta.arch import native_model_type
        from llmcli.output import warn

        if native_model_type(config):
            warn(
                f"{model_dir / 'config.json'}: auto_map names custom code; using transformers' own "
                f"{config.get('model_type')} classes instead (pass --trust-remote-code to run the custom code)"
            )
            return
        raise LlmcliError(
            "this model needs custom code from its directory (auto_map in config.json); llmcli does not run it",
            path=model_dir / "config.json",
            hint="pass --trust-remote-code if you trust its author",
        )
