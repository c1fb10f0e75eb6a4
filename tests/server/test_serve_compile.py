"""`llmcli serve --compile` on the CPU: the compiled step is built (or found kept) at start, a lone request
decodes through it, and requests still share batches (the flag once put every request on generate()'s static
cache, one at a time)."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor

from tests.helpers import run_cli
from tests.server.test_serve import KEY, post, start_server


def test_serve_compile_keeps_batching_and_steps_lone_rows_on_the_library(tiny_dir, step_home, capsys,
                                                                         monkeypatch):  # fmt: skip
    monkeypatch.setenv("LLMCLI_HOME", str(step_home))  # the server's environment is this one's
    proc, url = start_server(tiny_dir, "--dtype", "float32", "--no-prepack", "--compile")
    try:
        monkeypatch.setenv("LLMCLI_API_KEY", KEY)
        lone = run_cli(["generate", "--server", url, "hi", "--greedy", "-n", "6", "--json"], capsys, monkeypatch)
        assert lone.code == 0 and lone.json()["stats"]["compiled_step"] == "loaded", lone.stderr
        body = {"max_tokens": 32, "temperature": 0, "ignore_eos": True}
        with ThreadPoolExecutor(8) as pool:
            burst = list(pool.map(lambda i: post(url, "/v1/completions", {**body, "prompt": f"burst {i}"}).json(),
                                  range(8)))  # fmt: skip
        assert any(answer["batch"]["shared"] for answer in burst), burst[0]["batch"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def test_serve_without_the_flag_offers_it_once_at_a_terminal(tiny_dir, tmp_path, monkeypatch):
    """No library kept for a model whose libraries may hold the weights, or an int4/int8 one (not torch's dynamic
    int8): `serve` says once, to a person at a terminal, that `--compile` builds them (it never compiles
    unasked)."""
    from llmcli.engine.load.loader import load
    from llmcli.engine.step import offer as step_offer
    from llmcli.modelfs.source import resolve_model
    from llmcli.plan import Dtype, LoadSpec, Quantize
    from llmcli.server.compiled_step import offer

    monkeypatch.setenv("LLMCLI_HOME", str(tmp_path / "home"))
    loaded = load(resolve_model(str(tiny_dir)), LoadSpec(dtype=Dtype.bfloat16, serving=True, prepack=True))
    monkeypatch.setattr(step_offer, "at_terminal", lambda: False)
    assert offer(loaded) is None  # a script's stderr
    monkeypatch.setattr(step_offer, "at_terminal", lambda: True)
    said = offer(loaded)
    assert said and "`--compile` builds them" in said and "bfloat16" in said
    assert offer(loaded) is None  # said once
    for quantize, offered in (("int4", True), ("int8", True), ("int8-dynamic", False)):
        spec = LoadSpec(dtype=Dtype.bfloat16, serving=True, quantize=Quantize(quantize))
        said = offer(load(resolve_model(str(tiny_dir)), spec))
        assert bool(said) == offered and (not said or f"bfloat16 + {quantize}" in said)
