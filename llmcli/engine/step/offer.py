"""The offer of `--compile`, made once on stderr: a run that would decode through a library holding the weights
if one were kept (engine.step.variant: a small bfloat16 model on the CPU) and asks for enough tokens for it to
pay says how to build one. Without it a user never meets the compiled step: it is built only under `--compile`
(about 40 s for the default model), and later runs use it unasked (default model, this project's AMD EPYC
machine: 97 against 65 tok/s). Only for a person at a terminal (stderr a TTY): a script's stderr and a pipe
into `head` stay quiet. "Once" is per model directory and dtype, remembered in llmcli's cache (modelfs.memo).
May import modelfs; no torch.
"""

from __future__ import annotations

import sys
from pathlib import Path

from llmcli.modelfs.memo import first_time

PAYS_FROM = 64  # tokens asked for: the library's load (~0.15 s) against ~4 ms saved a token (break-even ~45)
MEMO = "compile-offers.json"


def offer(path: Path, *, dtype: str, tokens: int | None) -> str | None:
    """The line to print, or None (too few tokens, no terminal, or offered before)."""
    if tokens is None or tokens < PAYS_FROM or not at_terminal():
        return None
    if not first_time(MEMO, f"{path.resolve()}|{dtype}"):
        return None
    return (f"{path.name}: no compiled decoding step is kept for it in {dtype} on this CPU; one run with "
            "`--compile` builds it (about a minute, once), and later runs decode with it (said once)")  # fmt: skip


def at_terminal() -> bool:
    return sys.stderr.isatty()
