"""The offer of `llmcli quantize`, made once on stderr when a load spent more than a minute quantizing: the saved
copy holds the same codes (engine.quant.export) and loads without quantizing again. "Once" is per model
directory, scheme and group size, remembered in llmcli's cache (modelfs.memo), so the line does not repeat on
every run of a script. May import modelfs; no torch.
"""

from __future__ import annotations

from pathlib import Path

from llmcli.modelfs.memo import first_time

OFFER_AFTER_S = 60.0
MEMO = "quantize-offers.json"


def offer(label: str, path: Path, *, scheme: str, group_size: int | None, seconds: float) -> str | None:
    """The line to print, or None (quick enough, or offered before)."""
    if seconds < OFFER_AFTER_S:
        return None
    if not first_time(MEMO, f"{path.resolve()}|{scheme}|{group_size}"):
        return None
    group = f" --group-size {group_size}" if group_size and group_size != 32 else ""
    return (f"{path.name}: quantizing took {seconds:.0f} s; `llmcli quantize {label} OUT --to {scheme}{group}` "
            f"saves these codes once, and loading OUT skips this (said once)")  # fmt: skip
