"""The models a server holds: each loaded once, unloaded after `--keep-alive` of idleness and loaded again
by the next request that names it (ollama's habit), and described for `llmcli ps`."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from typing import Any


class Served:
    """One model under the name clients call it, and the generation defaults its generation_config.json ships."""

    def __init__(
        self,
        name: str,
        load: Callable[[], Any],
        *,
        keep_alive: float | None = None,
        chat_template: str | None = None,
        tool_parser: str | None = None,
    ):
        from llmcli.modelfs.tokenizer import generation_defaults
        from llmcli.server.tool_template import parser_for, tool_template

        self.name, self._load, self.keep_alive = name, load, keep_alive
        self.lock = threading.Lock()
        self.loaded: Any = load()
        self.chat_template = chat_template  # serve --chat-template: over the model's own
        template = chat_template or getattr(self.loaded.tokenizer, "chat_template", None)
        self.tools_template, self.tools_source = tool_template(template if isinstance(template, str) else None)
        self.tool_parser = tool_parser or parser_for(self.tools_template)
        self.info = self.loaded.describe()  # still shown by `ps` while unloaded
        self.defaults = generation_defaults(self.loaded.source.path) or {}
        self.created = int(time.time())
        self.last_used = time.monotonic()
        self.loads = 1

    def acquire(self) -> Any:
        """The loaded model, loading it again if keep-alive let it go (in a worker thread: it may take a while)."""
        with self.lock:
            if self.loaded is None:
                self.loaded = self._load()
                self.loads += 1
            self.last_used = time.monotonic()
            return self.loaded

    def replay(self) -> dict[str, Any] | None:
        """The replay block of this model's records (engine.load.environment), while it is loaded."""
        from llmcli.engine.load.environment import environment

        loaded = self.loaded
        return None if loaded is None else environment(loaded)

    def idle_seconds(self) -> float:
        return time.monotonic() - self.last_used

    def release_if_idle(self) -> bool:
        """Unloads the model when idle past keep-alive; the caller makes sure no request is in flight."""
        if self.keep_alive is None or self.loaded is None or self.idle_seconds() < self.keep_alive:
            return False
        with self.lock:
            on_gpu = self.loaded.device.startswith("cuda")
            self.loaded = None
            gc.collect()
            if on_gpu:
                import torch

                torch.cuda.empty_cache()
        return True

    def status(self) -> dict[str, Any]:
        loaded = self.loaded
        return {
            "name": self.name,
            "path": self.info["path"],
            "dtype": self.info["dtype"],
            "device": self.info["device"],
            "quantize": self.info.get("quantize"),
            "quantization": _quantization_summary(self.info.get("quantization")),
            "dtype_choice": self.info.get("dtype_choice"),
            "loaded": loaded is not None,
            "weights_bytes": weights_bytes(loaded.model) if loaded is not None else 0,
            "prepacked_bytes": loaded.prepacked_bytes if loaded is not None else 0,
            "split_lone_rows": loaded is not None and loaded.split_lone_rows,
            "idle_seconds": round(self.idle_seconds(), 1),
            "keep_alive_seconds": self.keep_alive,
            "loads": self.loads,
            "chat_template": "--chat-template" if self.chat_template else "the model's",
            "tools": self.tools_source if self.tools_template else None,
            "tool_parser": self.tool_parser if self.tools_template else None,
        }


def _quantization_summary(info: dict[str, Any] | None) -> dict[str, Any] | None:
    """ps's view of a quantized model: the scheme and its sizes, without the list of layers kept."""
    return None if info is None else {k: v for k, v in info.items() if k != "kept"} | {"kept": len(info["kept"])}


def weights_bytes(model: Any) -> int:
    """Parameters and buffers as held in memory (tied weights once; a weight released for its oneDNN copy,
    left on the meta device, holds nothing)."""
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_meta or tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        total += tensor.numel() * tensor.element_size()
    return total
