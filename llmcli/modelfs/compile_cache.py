"""Where inductor keeps what it compiles (the code search's kernels, `--compile`'s decoding step): in llmcli's
home (`inductor/`), not in /tmp, so that a compile is paid once per model shape, dtype and CPU and survives a
reboot; `TORCHINDUCTOR_CACHE_DIR` set by the user wins. inductor reads the variable when it first compiles,
so this is called before any compile. Here beside llmcli's other caches (modelfs.memo); no torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from llmcli.modelfs.default_model import cache_home

VARIABLE = "TORCHINDUCTOR_CACHE_DIR"


def use_llmcli_cache() -> Path:
    """The directory inductor will use (llmcli's unless the user named another)."""
    os.environ.setdefault(VARIABLE, str(cache_home() / "inductor"))
    return Path(os.environ[VARIABLE])
