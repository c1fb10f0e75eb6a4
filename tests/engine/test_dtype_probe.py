"""engine.load.dtype_probe: the CPU's decoding dtype and product (torch's plain one or oneDNN's on reordered
weights) measured once per CPU, torch, shape and rows, kept in llmcli's home, and taken by a load for generation
among the candidates its flags leave (never for one-pass commands; --dtype keeps one dtype, --compile and
--no-prepack the plain product)."""

from __future__ import annotations

import pytest

from llmcli.engine.load import devices, dtype_probe

CONFIG = {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4}


@pytest.fixture
def probe_on(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMCLI_DTYPE_PROBE", "1")
    monkeypatch.setenv("LLMCLI_HOME", str(tmp_path))


def _timings(monkeypatch, ms):
    """`ms` per candidate name; a oneDNN candidate not named takes its dtype's time and 1 ms more."""
    calls = []

    def seconds(shape, rows, dtype, product):
        calls.append((shape, rows, dtype, product))
        name = dtype_probe.name_of(dtype, product)
        return (ms[name] if name in ms else ms[dtype] + 1.0) / 1e3

    monkeypatch.setattr(dtype_probe, "_seconds", seconds)
    return calls


@pytest.mark.parametrize(("ms", "want"), [({"bfloat16": 1.0, "float32": 2.0}, "bfloat16"),
                                          ({"bfloat16": 3.0, "float32": 2.0}, "float32")])  # fmt: skip
def test_the_faster_dtype_is_chosen_and_kept(probe_on, monkeypatch, ms, want):
    calls = _timings(monkeypatch, ms)
    first = dtype_probe.measured(CONFIG, rows=1)
    assert first["dtype"] == want and first["product"] == "plain" and first["cached"] is False
    assert first["ms"] == ms | {f"{d}+onednn": ms[d] + 1.0 for d in ms}
    assert first["shape"] == [256, 64] and {c[2:] for c in calls} == {(d, p) for d in ms for p in ("plain", "onednn")}
    again = dtype_probe.measured(CONFIG, rows=1)
    assert again["dtype"] == want and again["cached"] is True and len(calls) == 4  # read back, not measured
    dtype_probe.measured(CONFIG, rows=16)  # serve's rows are a measurement of their own
    assert len(calls) == 8 and calls[-1][1] == 16


def test_the_flags_narrow_the_candidates_of_one_measurement(probe_on, monkeypatch):
    ms = {"bfloat16": 3.0, "float32": 4.0, "bfloat16+onednn": 1.0, "float32+onednn": 2.0}
    calls = _timings(monkeypatch, ms)
    kernel = devices.cpu_kernel
    best = kernel(CONFIG, dtype="auto", prepack=None, serving=False)
    assert (best["dtype"], best["product"]) == ("bfloat16", "onednn")
    assert kernel(CONFIG, dtype="float32", prepack=None, serving=False)["product"] == "onednn"  # --dtype float32
    assert kernel(CONFIG, dtype="auto", prepack=False, serving=False)["dtype"] == "bfloat16"  # --compile: plain
    assert kernel(CONFIG, dtype="float32", prepack=False, serving=False) is None  # nothing left to choose
    assert kernel(CONFIG, dtype="float16", prepack=None, serving=False) is None  # no candidate measured
    assert devices.resolve_dtype("auto", "cpu", CONFIG) == "bfloat16"  # the plain product's faster dtype
    assert len(calls) == 4  # one measurement answered them all


def test_auto_takes_the_measurement_and_flags_or_choices_still_win(probe_on, monkeypatch):
    _timings(monkeypatch, {"bfloat16": 3.0, "float32": 2.0})
    assert devices.resolve_dtype("auto", "cpu", CONFIG) == "float32"
    assert devices.resolve_dtype("auto", "cpu", CONFIG, serving=True) == "float32"
    assert devices.resolve_dtype("bfloat16", "cpu", CONFIG) == "bfloat16"  # --dtype wins
    assert devices.resolve_dtype("auto", "cpu", CONFIG, prefill_only=True) == "float32"
    monkeypatch.setenv("LLMCLI_DTYPE_PROBE", "0")
    assert devices.resolve_dtype("auto", "cpu", CONFIG) == "bfloat16"  # the flags' rule, as before


def test_a_damaged_memo_is_measured_again(probe_on, monkeypatch, tmp_path):
    calls = _timings(monkeypatch, {"bfloat16": 1.0, "float32": 2.0})
    dtype_probe.measured(CONFIG, rows=1)
    memo = tmp_path / dtype_probe.MEMO
    memo.write_text(memo.read_text().replace('"bfloat16"', '"float64"', 1))
    assert dtype_probe.measured(CONFIG, rows=1)["dtype"] == "bfloat16" and len(calls) == 8


def test_a_real_load_records_what_chose_its_dtype(probe_on, tiny_dir):
    from llmcli.engine.load.loader import load
    from llmcli.modelfs.source import ModelSource
    from llmcli.plan import LoadSpec

    loaded = load(ModelSource(tiny_dir, str(tiny_dir)), LoadSpec(device="cpu", prepack=None))  # as generate's
    choice = loaded.describe()["dtype_choice"]
    names = {"bfloat16", "float32", "bfloat16+onednn", "float32+onednn"}
    assert choice["dtype"] == loaded.dtype and set(choice["ms"]) == names
    assert loaded.prepacked == (choice["product"] == "onednn")  # the measured product is the one loaded
    assert all(ms > 0 for ms in choice["ms"].values())
    pinned = load(ModelSource(tiny_dir, str(tiny_dir)), LoadSpec(device="cpu", dtype="float32"))
    assert "dtype_choice" not in pinned.describe()
    from llmcli.engine.load.environment import environment

    recorded = environment(loaded)["dtype_choice"]  # the replay block: the measurement, not whether memo held it
    assert recorded == {k: v for k, v in choice.items() if k != "cached"} and "cached" in choice
    assert environment(pinned)["dtype_choice"] is None


def test_models_lists_the_kept_measurements(probe_on, monkeypatch, tmp_path, capsys):
    from tests.helpers import run_cli

    _timings(monkeypatch, {"bfloat16": 3.0, "float32": 4.0, "bfloat16+onednn": 1.0, "float32+onednn": 2.0})
    dtype_probe.measured(CONFIG, rows=16)
    memo = tmp_path / dtype_probe.MEMO
    memo.write_text(memo.read_text()[:-1] + ', "not a key": {"ms": 1}}')  # a foreign entry is left out
    run = run_cli(["models", "--json"], capsys, monkeypatch)
    [kept] = run.json()["kernel_measurements"]
    assert (kept["dtype"], kept["product"], kept["rows"], kept["shape"]) == ("bfloat16", "onednn", 16, [256, 64])
    assert kept["torch"] and kept["flags"] and kept["ms"]["float32"] == 4.0
    shown = run_cli(["models"], capsys, monkeypatch).stdout
    assert "bfloat16+onednn 1.0, float32+onednn 2.0, bfloat16 3.0, float32 4.0" in shown
