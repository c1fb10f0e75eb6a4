"""transformers, accelerate and tqdm kept quiet: llmcli says what matters itself, once, on stderr.

A shared bottom module (imports nothing of llmcli): the engine calls it before loading, and modelfs before it
converts the default model's GGUF. transformers is imported inside the function only.
"""

from __future__ import annotations

import os
import sys
import warnings


def quiet_transformers() -> None:
    """transformers' own warnings and progress bars stay off unless the user asked for -v."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # transformers' GGUF conversion uses a bare tqdm bar: keep it for people at a terminal only.
    if not (sys.stderr.isatty() or os.environ.get("TRANSFORMERS_VERBOSITY") == "info"):
        os.environ.setdefault("TQDM_DISABLE", "1")
    warnings.filterwarnings("ignore", module="transformers")
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    if os.environ.get("TRANSFORMERS_VERBOSITY") != "info":  # --device-map: --json's placement says it better
        import logging

        logging.getLogger("accelerate.big_modeling").setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:  # noqa: BLE001
        pass
