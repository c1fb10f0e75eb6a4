"""Wall time of short llmcli invocations (median of 7 runs, after one warm-up), as JSON on stdout."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LLMCLI = str(ROOT / ".venv" / "bin" / "llmcli")
QWEN = str(ROOT / "tests" / "data" / "qwen2.5-7b")
CASES = {
    "llmcli --help": [LLMCLI, "--help"],
    "llmcli generate --help": [LLMCLI, "generate", "--help"],
    "llmcli inspect QWEN7B --only config (torch-free)": [LLMCLI, "inspect", QWEN, "--only", "config"],
    "llmcli inspect QWEN7B (full, meta-device build)": [LLMCLI, "inspect", QWEN],
}


def timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def main() -> None:
    results = {}
    for name, cmd in CASES.items():
        timed(cmd)
        runs = [timed(cmd) for _ in range(7)]
        results[name] = {"median": statistics.median(runs), "min": min(runs), "max": max(runs)}
    json.dump(results, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
