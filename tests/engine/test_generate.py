"""`llmcli generate` on a tiny real model: kwargs reach generate(), outputs equal a direct call."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import pytest

from tests.helpers import ROOT, assert_clean_error, cli_env, run_cli

PROMPT = "What is the capital of France?"


def gen(tiny_dir, args, capsys, monkeypatch, stdin=None):
    return run_cli(
        ["generate", "-m", str(tiny_dir), "--device", "cpu", "--dtype", "float32", *args],
        capsys,
        monkeypatch,
        stdin=stdin,
    )


@pytest.fixture
def generate_spy(monkeypatch):
    """The keyword arguments the model's generate() actually receives."""
    from transformers import LlamaForCausalLM

    seen = {}
    original = LlamaForCausalLM.generate

    def spy(self, *args, **kwargs):
        seen.update(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LlamaForCausalLM, "generate", spy)
    return seen


def direct_generate(direct, prompt_ids, kwargs, seed=None):
    import torch

    model, _ = direct
    if seed is not None:
        torch.manual_seed(seed)
    ids = torch.tensor([prompt_ids])
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
    return [row[len(prompt_ids) :] for row in out.tolist()]


def strip_eos(ids, eos):
    for i, t in enumerate(ids):
        if t == eos:
            return ids[: i + 1]
    return ids


def test_greedy_equals_direct_generate(tiny_dir, direct, capsys, monkeypatch):
    run = gen(tiny_dir, [PROMPT, "--greedy", "--max-new-tokens", "12", "--json"], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    data = run.json()
    _, tok = direct
    expected_prompt = tok.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    assert data["prompt_token_ids"] == list(expected_prompt)
    assert data["generate_kwargs"]["do_sample"] is False and data["generate_kwargs"]["max_new_tokens"] == 12
    ref = direct_generate(direct, data["prompt_token_ids"], data["generate_kwargs"])
    assert data["outputs"][0]["token_ids"] == strip_eos(ref[0], tok.eos_token_id)
    assert data["outputs"][0]["text"] == tok.decode(data["outputs"][0]["token_ids"], skip_special_tokens=True)
    assert data["seed"] is None


def test_seeded_sampling_equals_direct_generate(tiny_dir, direct, capsys, monkeypatch):
    args = [
        PROMPT,
        "--temperature",
        "1.3",
        "--top-k",
        "50",
        "--top-p",
        "0.95",
        "--seed",
        "1234",
        "--max-new-tokens",
        "16",
        "--json",
    ]
    first = gen(tiny_dir, args, capsys, monkeypatch).json()
    second = gen(tiny_dir, args, capsys, monkeypatch).json()
    assert first["outputs"] == second["outputs"]
    assert first["seed"] == 1234
    kwargs = first["generate_kwargs"]
    assert kwargs["do_sample"] is True and kwargs["temperature"] == 1.3 and kwargs["top_k"] == 50
    ref = direct_generate(direct, first["prompt_token_ids"], kwargs, seed=1234)
    assert first["outputs"][0]["token_ids"] == strip_eos(ref[0], direct[1].eos_token_id)


def test_sampling_without_seed_reports_the_seed_it_used(tiny_dir, direct, capsys, monkeypatch):
    data = gen(tiny_dir, [PROMPT, "-t", "0.8", "-n", "8", "--json"], capsys, monkeypatch).json()
    assert isinstance(data["seed"], int)
    again = gen(
        tiny_dir, [PROMPT, "-t", "0.8", "-n", "8", "--json", "--seed", str(data["seed"])], capsys, monkeypatch
    ).json()
    assert again["outputs"] == data["outputs"]


def test_every_flag_reaches_generate_under_its_own_name(tiny_dir, generate_spy, capsys, monkeypatch):
    seen = generate_spy
    run = gen(
        tiny_dir,
        [
            PROMPT,
            "--num-beams",
            "3",
            "--num-return-sequences",
            "2",
            "--length-penalty",
            "0.5",
            "--early-stopping",
            "true",
            "--repetition-penalty",
            "1.1",
            "--no-repeat-ngram-size",
            "2",
            "--min-new-tokens",
            "2",
            "--max-new-tokens",
            "6",
            "--set",
            "epsilon_cutoff=0.0",
            "--json",
        ],
        capsys,
        monkeypatch,
    )
    assert run.code == 0, run.stderr
    expected = {
        "num_beams": 3,
        "num_return_sequences": 2,
        "length_penalty": 0.5,
        "early_stopping": True,
        "repetition_penalty": 1.1,
        "no_repeat_ngram_size": 2,
        "min_new_tokens": 2,
        "max_new_tokens": 6,
        "epsilon_cutoff": 0.0,
    }
    for key, value in expected.items():
        assert seen[key] == value, key
    data = run.json()
    assert {k: data["generate_kwargs"][k] for k in expected} == expected
    assert len(data["outputs"]) == 2
    assert "temperature" not in seen and "top_p" not in seen  # untouched flags are not forwarded


def test_sampling_flags_reach_generate(tiny_dir, generate_spy, capsys, monkeypatch):
    seen = generate_spy
    run = gen(
        tiny_dir,
        [
            PROMPT,
            "--temperature",
            "0.7",
            "--top-p",
            "0.9",
            "--top-k",
            "40",
            "--min-p",
            "0.01",
            "--typical-p",
            "0.95",
            "--seed",
            "1",
            "-n",
            "4",
        ],
        capsys,
        monkeypatch,
    )
    assert run.code == 0, run.stderr
    for key, value in {
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 40,
        "min_p": 0.01,
        "typical_p": 0.95,
        "do_sample": True,
    }.items():
        assert seen[key] == value


def test_json_schema(tiny_dir, capsys, monkeypatch):
    data = gen(tiny_dir, [PROMPT, "-n", "5", "--greedy", "--json"], capsys, monkeypatch).json()
    assert set(data) >= {"model", "prompt_token_ids", "generate_kwargs", "seed", "outputs", "stats"}
    assert data["model"]["path"] == str(tiny_dir)
    assert data["model"]["dtype"] == "float32" and data["model"]["device"] == "cpu"
    out = data["outputs"][0]
    assert set(out) == {"text", "token_ids", "finish_reason"}
    assert out["finish_reason"] in ("stop", "length")
    if out["finish_reason"] == "length":
        assert len(out["token_ids"]) == 5
    stats = data["stats"]
    for key in (
        "load_seconds",
        "prompt_tokens",
        "time_to_first_token",
        "prefill_tokens_per_second",
        "decode_tokens_per_second",
        "generated_tokens",
        "peak_memory_bytes",
    ):
        assert key in stats
    assert stats["prompt_tokens"] == len(data["prompt_token_ids"])
    assert stats["generated_tokens"] == len(out["token_ids"])


def test_stop_string_cuts_output(tiny_dir, capsys, monkeypatch):
    base = gen(
        tiny_dir, [PROMPT, "-n", "30", "--greedy", "--min-new-tokens", "30", "--json"], capsys, monkeypatch
    ).json()
    text = base["outputs"][0]["text"]
    # The first character that has not appeared before: a stop string that cannot match earlier.
    first_new = next(i for i in range(1, len(text)) if text[i] not in text[:i] and not text[i].isspace())
    stop = text[first_new]
    cut = gen(
        tiny_dir,
        [PROMPT, "-n", "30", "--greedy", "--min-new-tokens", "30", "--stop", stop, "--json"],
        capsys,
        monkeypatch,
    ).json()
    assert cut["outputs"][0]["finish_reason"] == "stop_string"
    assert cut["outputs"][0]["text"] == text[:first_new]
    assert len(cut["outputs"][0]["token_ids"]) < 30


def test_plain_output_is_only_the_text(tiny_dir, capsys, monkeypatch):
    data = gen(tiny_dir, [PROMPT, "-n", "8", "--greedy", "--json"], capsys, monkeypatch).json()
    run = gen(tiny_dir, [PROMPT, "-n", "8", "--greedy"], capsys, monkeypatch)
    assert run.code == 0
    assert run.stdout == data["outputs"][0]["text"] + "\n"
    assert run.stderr == ""


def test_stats_go_to_stderr(tiny_dir, capsys, monkeypatch):
    run = gen(tiny_dir, [PROMPT, "-n", "8", "--greedy", "--stats"], capsys, monkeypatch)
    assert "decode" in run.stderr and "time to first token" in run.stderr and "peak memory" in run.stderr
    assert "llmcli stats" not in run.stdout


def test_stdin_and_dash(tiny_dir, capsys, monkeypatch):
    dash = gen(tiny_dir, ["-", "-n", "3", "--greedy", "--json"], capsys, monkeypatch, stdin=b"from stdin").json()
    assert dash["prompt"] == "from stdin"
    joined = gen(
        tiny_dir, ["summarise", "-n", "3", "--greedy", "--json"], capsys, monkeypatch, stdin=b"a long document\n"
    ).json()
    assert joined["prompt"] == "a long document\n\nsummarise"
    only_pipe = gen(tiny_dir, ["-n", "3", "--greedy", "--json"], capsys, monkeypatch, stdin=b"piped only").json()
    assert only_pipe["prompt"] == "piped only"


def test_file_prompt(tiny_dir, tmp_path, capsys, monkeypatch):
    (tmp_path / "p.txt").write_text("prompt from a file\n")
    data = gen(
        tiny_dir, ["--file", str(tmp_path / "p.txt"), "-n", "3", "--greedy", "--json"], capsys, monkeypatch
    ).json()
    assert data["prompt"] == "prompt from a file\n"  # one source: byte for byte


def test_raw_skips_chat_template(tiny_dir, direct, capsys, monkeypatch):
    data = gen(tiny_dir, [PROMPT, "--raw", "-n", "3", "--greedy", "--json"], capsys, monkeypatch).json()
    assert data["prompt_token_ids"] == direct[1](PROMPT)["input_ids"]
    system = gen(
        tiny_dir, [PROMPT, "--system", "Be brief.", "-n", "3", "--greedy", "--json"], capsys, monkeypatch
    ).json()
    assert direct[1].decode(system["prompt_token_ids"]).startswith("<|im_start|>system\nBe brief.")


def test_each_line_batches_in_input_order(tiny_dir, capsys, monkeypatch):
    lines = ["first prompt", "the second one is a bit longer than the first", "third", "4", "five"]
    batch = gen(
        tiny_dir,
        ["--each-line", "-n", "6", "--greedy", "--batch-size", "3", "--json"],
        capsys,
        monkeypatch,
        stdin="\n".join(lines).encode(),
    ).jsonl()
    assert [b["prompt"] for b in batch] == lines
    for line, result in zip(lines, batch, strict=True):
        single = gen(tiny_dir, [line, "-n", "6", "--greedy", "--json"], capsys, monkeypatch).json()
        assert result["outputs"][0]["token_ids"] == single["outputs"][0]["token_ids"], line


def test_prompts_file_jsonl(tiny_dir, tmp_path, capsys, monkeypatch):
    (tmp_path / "p.jsonl").write_text('{"prompt": "alpha"}\n\n{"prompt": "beta"}\n')
    out = gen(
        tiny_dir, ["--prompts", str(tmp_path / "p.jsonl"), "-n", "2", "--greedy", "--json"], capsys, monkeypatch
    ).jsonl()
    assert [o["prompt"] for o in out] == ["alpha", "beta"]
    (tmp_path / "bad.jsonl").write_text('{"prompt": 3}\n')
    run = gen(tiny_dir, ["--prompts", str(tmp_path / "bad.jsonl")], capsys, monkeypatch)
    assert_clean_error(run, 1, "bad.jsonl", "line 1")


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--greedy", "--temperature", "0.7"], "--greedy contradicts --temperature"),
        (["--num-beams", "0"], "--num-beams"),
        (["--top-p", "1.5"], "--top-p"),
        (["--set", "no_such=1"], "not a GenerationConfig field"),
        (["--num-return-sequences", "2", "--greedy"], "num_return_sequences"),
    ],
)
def test_usage_errors(tiny_dir, args, needle, capsys, monkeypatch):
    assert_clean_error(gen(tiny_dir, [PROMPT, *args], capsys, monkeypatch), 2, needle)


def test_empty_prompt_is_usage_error(tiny_dir, capsys, monkeypatch):
    assert_clean_error(gen(tiny_dir, [], capsys, monkeypatch), 2, "empty prompt")
    assert_clean_error(gen(tiny_dir, ["   "], capsys, monkeypatch), 2, "empty prompt")


def test_non_utf8_stdin(tiny_dir, capsys, monkeypatch):
    assert_clean_error(gen(tiny_dir, ["-"], capsys, monkeypatch, stdin=b"\xff\xfe bad"), 1, "stdin", "UTF-8")


def test_prompt_longer_than_context(tiny_dir, capsys, monkeypatch):
    run = gen(tiny_dir, [" ".join(["capital"] * 400), "--raw"], capsys, monkeypatch)
    assert_clean_error(run, 1, "context is 256 tokens")


def test_missing_model_and_bad_device(tiny_dir, tmp_path, capsys, monkeypatch):
    assert_clean_error(run_cli(["generate", "-m", str(tmp_path / "x"), "hi"], capsys, monkeypatch), 1, "no such file")
    import torch

    if not torch.cuda.is_available():
        run = run_cli(["generate", "-m", str(tiny_dir), "--device", "cuda", "hi"], capsys, monkeypatch)
        assert_clean_error(run, 1, "cuda", "not available")
    assert_clean_error(
        run_cli(["generate", "-m", str(tiny_dir), "--device", "tpu", "hi"], capsys, monkeypatch), 2, "--device"
    )
    assert_clean_error(
        run_cli(["generate", "-m", str(tiny_dir), "--dtype", "int3", "hi"], capsys, monkeypatch), 2, "--dtype"
    )


def test_env_model(tiny_dir, capsys, monkeypatch):
    monkeypatch.setenv("LLMCLI_MODEL", str(tiny_dir))
    data = run_cli(["generate", "hi", "-n", "2", "--greedy", "--json"], capsys, monkeypatch).json()
    assert data["model"]["path"] == str(tiny_dir)


def test_show_config_does_not_load_weights(tiny_copy, capsys, monkeypatch):
    (tiny_copy / "generation_config.json").write_text(
        json.dumps({"do_sample": True, "temperature": 0.6, "eos_token_id": 2})
    )
    for shard in tiny_copy.glob("*.safetensors"):
        shard.write_bytes(b"garbage")  # would fail to load
    run = run_cli(["generate", "-m", str(tiny_copy), "--top-p", "0.9", "--show-config", "--json"], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    data = run.json()
    assert data["effective"]["temperature"] == 0.6 and data["effective"]["top_p"] == 0.9
    assert data["overrides"] == {"top_p": 0.9, "do_sample": True}
    plain = run_cli(["generate", "-m", str(tiny_copy), "--top-p", "0.9", "--show-config"], capsys, monkeypatch)
    assert "top_p" in plain.stdout and "override" in plain.stdout and "model default" in plain.stdout


class _Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_only_checkpoint_refused(tiny_dir, tmp_path, capsys, monkeypatch):
    model = tmp_path / "pickled"
    model.mkdir()
    (model / "config.json").write_text((tiny_dir / "config.json").read_text())
    sentinel = tmp_path / "PWNED"
    (model / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(str(sentinel))))
    run = run_cli(["generate", "-m", str(model), "hi"], capsys, monkeypatch)
    assert_clean_error(run, 1, "pickle", "--allow-pickle")
    assert not sentinel.exists()


def test_memory_check_refuses_oversized_weights(sparse_qwen7b, capsys, monkeypatch):
    import psutil

    import llmcli.modelfs.memory as memory

    real = psutil.virtual_memory()
    monkeypatch.setattr(
        memory,
        "device_memory",
        lambda device="auto": {"device": "cpu", "free_bytes": 1_000_000_000, "total_bytes": real.total},
    )
    monkeypatch.setattr("llmcli.engine.load.devices.device_memory", memory.device_memory)
    run = run_cli(["generate", "-m", str(sparse_qwen7b), "--device", "cpu", "hi"], capsys, monkeypatch)
    assert_clean_error(run, 1, "weights need 14.19 GiB", "--no-memory-check")


def test_pipe_into_head_is_quiet(tiny_dir):
    cmd = (
        f"set -o pipefail; {sys.executable} -m llmcli generate -m {tiny_dir} --device cpu --raw --min-new-tokens 200 "
        f"-n 200 --greedy 'The capital' | head -c 5; echo \" rc=$?\""
    )
    proc = subprocess.run(
        ["bash", "-c", cmd], capture_output=True, cwd=ROOT, env=cli_env(), timeout=300, stdin=subprocess.DEVNULL
    )
    assert b"Traceback" not in proc.stderr and b"BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.stderr == b""
    assert proc.stdout.decode().endswith(" rc=141\n") or proc.stdout.decode().endswith(" rc=0\n")
