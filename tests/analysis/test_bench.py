"""`llmcli bench` and the CPU speed options, on the tiny model (figures go to docs, never asserted)."""

from __future__ import annotations

import pytest

from tests.helpers import assert_clean_error, run_cli


def test_prompt_of_exact_length(direct_tokenizer):
    from llmcli.analysis.bench import prompt_of_length

    for n in (1, 5, 17, 40):
        text, ids = prompt_of_length(direct_tokenizer, n)
        assert len(ids) == n
        assert direct_tokenizer(text, add_special_tokens=True)["input_ids"] == ids


@pytest.fixture(scope="module")
def direct_tokenizer(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_dir))


def test_bench_json_report(tiny_dir, capsys, monkeypatch):
    run = run_cli(
        [
            "bench",
            "-m",
            str(tiny_dir),
            "-p",
            "8,16",
            "-g",
            "24",
            "-b",
            "1,2",
            "-r",
            "2",
            "--warmup",
            "0",
            "--compare-raw",
            "--json",
        ],
        capsys,
        monkeypatch,
    )
    assert run.code == 0, run.stderr
    data = run.json()
    assert [(r["prompt_tokens"], r["batch"]) for r in data["results"]] == [(8, 1), (8, 2), (16, 1), (16, 2)]
    for row in data["results"]:
        for side in ("llmcli", "raw"):
            entry = row[side]
            assert entry["decode_tokens_per_second"]["min"] <= entry["decode_tokens_per_second"]["median"]
            assert entry["decode_tokens_per_second"]["median"] <= entry["decode_tokens_per_second"]["max"]
            assert (
                len({"time_to_first_token", "prefill_tokens_per_second", "throughput_tokens_per_second"} & set(entry))
                == 3
            )
        assert row["ratio"]["decode_tokens_per_second"] > 0
        assert row["peak_memory_bytes"] > 0
    assert data["load_seconds"]["llmcli"] > 0 and data["load_seconds"]["raw"] > 0
    plain = run_cli(
        ["bench", "-m", str(tiny_dir), "-p", "8", "-g", "3", "-r", "1", "--warmup", "0"], capsys, monkeypatch
    )
    assert "decode tok/s" in plain.stdout and "TTFT ms" in plain.stdout


@pytest.mark.parametrize("args,needle", [(["-p", "0"], "--prompt-lengths"), (["-g", "x"], "--gen-lengths")])
def test_bench_usage_errors(tiny_dir, args, needle, capsys, monkeypatch):
    assert_clean_error(run_cli(["bench", "-m", str(tiny_dir), *args], capsys, monkeypatch), 2, needle)


def test_quantize_int8_dynamic(tiny_dir, capsys, monkeypatch):
    run = run_cli(
        ["generate", "-m", str(tiny_dir), "hello", "-n", "4", "--greedy", "--quantize", "int8-dynamic", "--json"],
        capsys,
        monkeypatch,
    )
    assert run.code == 0, run.stderr
    data = run.json()
    assert data["model"]["quantize"] == "int8-dynamic" and data["model"]["dtype"] == "float32"
    assert len(data["outputs"][0]["token_ids"]) >= 1
    bad = run_cli(
        ["generate", "-m", str(tiny_dir), "hi", "--quantize", "int8-dynamic", "--dtype", "bfloat16"],
        capsys,
        monkeypatch,
    )
    assert_clean_error(bad, 2, "--quantize int8-dynamic")
    bogus = run_cli(["generate", "-m", str(tiny_dir), "hi", "--quantize", "int3"], capsys, monkeypatch)
    assert_clean_error(bogus, 2, "--quantize")


def test_bench_takes_quantize_int4(tiny_dir, capsys, monkeypatch):
    args = ["bench", "-m", str(tiny_dir), "--quantize", "int4", "--dtype", "float32", "-p", "8", "-g", "4", "-r", "1"]
    run = run_cli([*args, "--warmup", "0", "--compare-raw", "--json"], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    data = run.json()
    assert data["model"]["quantize"] == "int4" and data["model"]["quantization"]["group_size"] == 32


def test_quantize_int8_replaces_linear_layers(tiny_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from llmcli.engine.quant.int8_dynamic import quantize_int8

    model = AutoModelForCausalLM.from_pretrained(str(tiny_dir), dtype=torch.float32)
    linear = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    q = quantize_int8(model)
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    assert sum(isinstance(m, dynamic) for m in q.modules()) == linear > 0
    assert not any(type(m) is torch.nn.Linear for m in q.modules())


def test_cpu_dtype_defaults(tiny_dir, capsys, monkeypatch):
    gen = run_cli(["generate", "-m", str(tiny_dir), "--device", "cpu", "hi", "-n", "2", "--json"], capsys, monkeypatch)
    assert gen.json()["model"]["dtype"] == "bfloat16"
    probe = run_cli(["next-token", "-m", str(tiny_dir), "--device", "cpu", "hi", "--json"], capsys, monkeypatch)
    assert probe.json()["model"]["dtype"] == "float32"
