"""A function run compiled by inductor where that works and plainly where it does not, for the code search
(engine.quant.fast_search) and the int4 prefill tiles (engine.quant.int4_tiles): compiled on first use with
inductor's cache in llmcli's home (modelfs.compile_cache), the first run's time said once on stderr, and after
a failed compile (no C++ compiler, a tracing error) one stderr line and the plain function for good. Imports
torch lazily, modelfs.compile_cache, the errors module and the output layer.
"""

from __future__ import annotations

import time
from typing import Any


class CompiledOnce:
    """`fn`, compiled by torch.compile(**options) on its first call. `what` names it in the stderr lines;
    `fallback` says what runs instead once the compile has failed."""

    def __init__(self, fn: Any, *, what: str, fallback: str, **options: Any) -> None:
        self.fn, self.what, self.fallback, self.options = fn, what, fallback, options
        self.compiled: Any = None
        self.failed: str | None = None  # the failure, squashed to a line
        self.said = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from llmcli.output import stderr_text

        if self.failed is not None:
            return self.fn(*args, **kwargs)
        started = time.perf_counter()
        try:
            out = self._compiled()(*args, **kwargs)
        except Exception as exc:  # inductor's failures have no common type
            from llmcli.errors import squash

            self.failed = squash(exc)
            stderr_text(f"the compiled {self.what} failed ({self.failed}); {self.fallback}")
            return self.fn(*args, **kwargs)
        if not self.said:
            self.said = True
            stderr_text(f"the {self.what} compiled and ran in {time.perf_counter() - started:.1f} s (inductor's "
                        "cache in llmcli's home keeps the compile for later runs)")  # fmt: skip
        return out

    def _compiled(self) -> Any:
        if self.compiled is None:
            import torch

            from llmcli.modelfs.compile_cache import use_llmcli_cache

            use_llmcli_cache()
            self.compiled = torch.compile(self.fn, **self.options)
        return self.compiled
