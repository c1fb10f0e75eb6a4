"""--compile, --attn and the GPU defaults: the flags reach transformers, and compiled output equals eager."""

from __future__ import annotations

import pytest

from tests.engine.test_generate import PROMPT, direct_generate, strip_eos
from tests.helpers import assert_clean_error, run_cli


def gen_run(tiny_dir, args, capsys, monkeypatch):
    run = run_cli(
        ["generate", "-m", str(tiny_dir), "--device", "cpu", "--dtype", "float32", PROMPT, "--json", *args],
        capsys,
        monkeypatch,
    )
    assert run.code == 0, run.stderr
    return run


def gen_json(tiny_dir, args, capsys, monkeypatch):
    return gen_run(tiny_dir, args, capsys, monkeypatch).json()


def test_compile_of_a_batch_runs_transformers_compiled_decode_with_eager_tokens(
    tiny_dir, capsys, monkeypatch, tmp_path
):
    """Two prompts at once are not the compiled step's one row (test_compiled_step.py): transformers compiles
    the batch's decoding step with torch.compile, and the tokens are the plain batch's."""
    import torch._dynamo

    monkeypatch.setenv("LLMCLI_HOME", str(tmp_path))  # nothing built here reaches other tests
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    base = ["generate", "-m", str(tiny_dir), "--dtype", "float32", "--each-line", "--json", "--greedy", "-n", "8",
            "--min-new-tokens", "8"]  # fmt: skip
    run = run_cli([*base, "--compile"], capsys, monkeypatch, stdin=b"What is the capital of France?\nhi\n")
    assert run.code == 0, run.stderr
    assert run.stderr.count("compiled the decoding step in ") == 1  # said, once
    records = run.jsonl()
    kwargs = records[0]["generate_kwargs"]
    assert kwargs["cache_implementation"] == "static" and kwargs["compile_config"] == {}
    # dynamo really traced the decoding step (transformers compiles only on accelerators unless told)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    assert [r["stats"]["compiled_step"] for r in records] == [None, None] and not (tmp_path / "steps").exists()
    plain = run_cli([*base, "--no-compile"], capsys, monkeypatch, stdin=b"What is the capital of France?\nhi\n")
    assert [r["outputs"] for r in plain.jsonl()] == [r["outputs"] for r in records]


def test_compile_config_fields_pass_through_set(tiny_dir, capsys, monkeypatch):
    run = run_cli(
        [
            "generate",
            "-m",
            str(tiny_dir),
            "hi",
            "--compile",
            "--set",
            'compile_config={"mode": "max-autotune", "fullgraph": true}',
            "--show-config",
            "--json",
        ],
        capsys,
        monkeypatch,
    )
    assert run.code == 0, run.stderr
    effective = run.json()["effective"]
    assert effective["cache_implementation"] == "static"
    assert effective["compile_config"]["mode"] == "max-autotune" and effective["compile_config"]["fullgraph"] is True
    bad = run_cli(
        ["generate", "-m", str(tiny_dir), "hi", "--set", 'compile_config={"nope": 1}', "--show-config"],
        capsys,
        monkeypatch,
    )
    assert_clean_error(bad, 2, "compile_config")


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_attn_choice_reaches_the_model(tiny_dir, direct, attn, capsys, monkeypatch):  # noqa: F811
    data = gen_json(tiny_dir, ["--greedy", "-n", "6", "--attn", attn], capsys, monkeypatch)
    assert data["model"]["attn_implementation"] == attn
    ref = direct_generate(direct, data["prompt_token_ids"], data["generate_kwargs"])
    assert data["outputs"][0]["token_ids"] == strip_eos(ref[0], direct[1].eos_token_id)


def test_attn_default_is_reported(tiny_dir, capsys, monkeypatch):
    assert gen_json(tiny_dir, ["-n", "2"], capsys, monkeypatch)["model"]["attn_implementation"] == "sdpa"


def test_attn_errors(tiny_dir, capsys, monkeypatch):
    bogus = run_cli(["generate", "-m", str(tiny_dir), "hi", "--attn", "fastest"], capsys, monkeypatch)
    assert_clean_error(bogus, 2, "--attn")
    try:
        import flash_attn  # noqa: F401

        pytest.skip("flash_attn is installed here; the missing-package error cannot be provoked")
    except ImportError:
        pass
    flash = run_cli(["generate", "-m", str(tiny_dir), "hi", "--attn", "flash_attention_2"], capsys, monkeypatch)
    assert_clean_error(flash, 1, "--attn flash_attention_2", str(tiny_dir))


def test_bench_compile_and_attn_are_reported(tiny_dir, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("LLMCLI_HOME", str(tmp_path))  # the compiled step it builds must not reach other tests
    run = run_cli(
        ["bench", "-m", str(tiny_dir), "-p", "8", "-g", "16", "-r", "3", "--attn", "eager", "--compile", "--json"],
        capsys,
        monkeypatch,
    )
    assert run.code == 0, run.stderr
    data = run.json()
    assert data["model"]["attn_implementation"] == "eager"
    assert data["settings"]["compile"] is True
    assert data["settings"]["generate_kwargs"]["cache_implementation"] == "static"
    assert data["results"][0]["llmcli"]["decode_tokens_per_second"]["median"] > 0


@pytest.mark.parametrize(
    "saved,bf16,expected",
    [
        ("float32", True, "bfloat16"),
        ("bfloat16", True, "bfloat16"),
        ("float16", True, "float16"),
        (None, False, "float16"),
    ],
)
def test_cuda_auto_dtype(monkeypatch, saved, bf16, expected):
    import torch

    from llmcli.engine.load.devices import resolve_dtype

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    config = {"torch_dtype": saved} if saved else {}
    assert resolve_dtype("auto", "cuda", config) == expected
    assert resolve_dtype("float32", "cuda", config) == "float32"


def test_token_timer_waits_for_the_device_once():
    from llmcli.engine.generate.streaming import TokenTimer

    waits = []
    timer = TokenTimer(None, sync=lambda: waits.append(1))
    timer.put("the prompt")
    assert waits == []
    for _ in range(5):
        timer.put(None)
    assert waits == [1] and timer.count == 5 and timer.first_token_at <= timer.last_token_at


class FakeLoaded:
    def __init__(self, model, device="cuda:0", request="auto"):
        self.model, self.device, self.attn_request = model, device, request

    @property
    def attn(self):
        return self.model.config._attn_implementation


@pytest.fixture
def tiny_model(tiny_dir):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(tiny_dir), dtype=torch.float32)


def test_auto_attention_policy(tiny_model):
    from llmcli.engine.generate.attention import SHORT_PREFILL_TOKENS, choose

    assert choose(FakeLoaded(tiny_model), 40, static_cache=False) == "eager"
    assert choose(FakeLoaded(tiny_model), SHORT_PREFILL_TOKENS + 1, static_cache=False) is None
    assert choose(FakeLoaded(tiny_model), 40, static_cache=True) is None
    assert choose(FakeLoaded(tiny_model, device="cpu"), 40, static_cache=False) is None
    assert choose(FakeLoaded(tiny_model, request="sdpa"), 40, static_cache=False) is None


def test_attention_switch_is_undone_after_the_call(tiny_model):
    from llmcli.engine.generate.attention import attention_for_call

    loaded = FakeLoaded(tiny_model)
    assert loaded.attn == "sdpa"
    with attention_for_call(loaded, 16, static_cache=False) as used:
        assert used == "eager" and tiny_model.config._attn_implementation == "eager"
    assert tiny_model.config._attn_implementation == "sdpa"
    with pytest.raises(RuntimeError), attention_for_call(loaded, 16, static_cache=False):
        raise RuntimeError("generate() failed")
    assert tiny_model.config._attn_implementation == "sdpa"


def test_cuda_auto_attention_through_generate(tiny_dir, tiny_model, monkeypatch):
    """generate() under the CUDA policy (device name faked, model on CPU): eager runs, is reported, and
    gives the tokens SDPA gives."""
    import torch
    from transformers import AutoTokenizer

    from llmcli.engine.generate.generation import generate
    from llmcli.plan import GenerationPlan

    for name, value in (("synchronize", None), ("reset_peak_memory_stats", None), ("max_memory_allocated", 0)):
        monkeypatch.setattr(torch.cuda, name, lambda *a, _v=value, **k: _v)  # no GPU here
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_dir))
    kwargs = {"max_new_tokens": 6, "do_sample": False}
    results = {}
    for request in ("auto", "sdpa"):
        loaded = FakeLoaded(tiny_model, request=request)
        loaded.tokenizer, loaded.config, loaded.load_seconds = tokenizer, tiny_model.config.to_dict(), 0.0
        [results[request]] = generate(loaded, ["hello there"], GenerationPlan(kwargs=kwargs), raw=True)
    assert results["auto"].stats.attn_implementation == "eager"
    assert results["sdpa"].stats.attn_implementation == "sdpa"
    assert tiny_model.config._attn_implementation == "sdpa"
    assert results["auto"].outputs[0].token_ids == results["sdpa"].outputs[0].token_ids


def test_threads_sets_torchs_thread_count(tiny_dir, capsys, monkeypatch):
    import torch

    before = torch.get_num_threads()
    try:
        run = run_cli(["generate", "-m", str(tiny_dir), "hi", "-n", "2", "--threads", "1"], capsys, monkeypatch)
        assert run.code == 0, run.stderr
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    bad = run_cli(["generate", "-m", str(tiny_dir), "hi", "--threads", "0"], capsys, monkeypatch)
    assert bad.code == 2 and "--threads" in bad.stderr and "Traceback" not in bad.stderr  # Typer's usage error


@pytest.mark.parametrize("command", ["generate", "bench"])
def test_compile_with_int8_dynamic_is_refused(tiny_dir, command, capsys, monkeypatch):
    args = [command, "-m", str(tiny_dir), "--compile", "--quantize", "int8-dynamic"] + (
        ["hi"] if command == "generate" else []
    )
    assert_clean_error(run_cli(args, capsys, monkeypatch), 2, "--compile and --quantize int8-dynamic")
