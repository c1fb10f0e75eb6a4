"""Prompt-lookup and assisted decoding: faster drafts, and under greedy decoding the very same tokens.

Every comparison runs in float32: drafted and plain decoding are two compute paths, and in bfloat16 a near-tie
can flip between them on one CPU and not another."""

from __future__ import annotations

from tests.helpers import assert_clean_error, run_cli

PASSAGE = (
    "Tokens become ids, ids become vectors, and the model predicts the next token. The capital of France is "
    "Paris. The capital of Italy is Rome. Hello world! What is the capital of Germany? Berlin is."
)


def greedy_ids(model_dir, extra, capsys, monkeypatch, prompt=PASSAGE):
    args = ["generate", "-m", str(model_dir), prompt, "--raw", "--greedy", "-n", "40", "--dtype", "float32", "--json"]
    args += extra
    run = run_cli(args, capsys, monkeypatch)
    assert run.code == 0, run.stderr
    return run.json()


def test_prompt_lookup_keeps_greedy_tokens(tiny_dir, capsys, monkeypatch):
    plain = greedy_ids(tiny_dir, [], capsys, monkeypatch)
    looked = greedy_ids(tiny_dir, ["--prompt-lookup", "5"], capsys, monkeypatch)
    assert looked["generate_kwargs"]["prompt_lookup_num_tokens"] == 5
    assert looked["outputs"][0]["token_ids"] == plain["outputs"][0]["token_ids"]


def test_prompt_lookup_on_the_default_model(default_model_dir, capsys, monkeypatch):
    prompt = f"Repeat this text exactly: {PASSAGE}"
    plain = greedy_ids(default_model_dir, [], capsys, monkeypatch, prompt=prompt)
    looked = greedy_ids(default_model_dir, ["--prompt-lookup", "8"], capsys, monkeypatch, prompt=prompt)
    assert looked["outputs"][0]["token_ids"] == plain["outputs"][0]["token_ids"]
    assert looked["stats"]["generated_tokens"] == plain["stats"]["generated_tokens"]


def test_assistant_model_keeps_greedy_tokens(tiny_dir, tiny_untied_single, capsys, monkeypatch):
    """A draft model with other weights and the same tokenizer: its proposals are only ever accepted where
    the model agrees, so the tokens are the model's own."""
    plain = greedy_ids(tiny_dir, [], capsys, monkeypatch)
    extra = ["--assistant-model", str(tiny_untied_single), "--set", "num_assistant_tokens=4"]
    assisted = greedy_ids(tiny_dir, extra, capsys, monkeypatch)
    assert assisted["outputs"][0]["token_ids"] == plain["outputs"][0]["token_ids"]
    assert assisted["model"]["assistant_model"] == str(tiny_untied_single)


def test_batches_run_one_prompt_at_a_time(tiny_dir, capsys, monkeypatch):
    args = [
        "generate",
        "-m",
        str(tiny_dir),
        "--each-line",
        "--raw",
        "--greedy",
        "-n",
        "8",
        "--dtype",
        "float32",
        "--json",
    ]
    stdin = b"first prompt\nsecond prompt\nthird\n"
    plain = run_cli(args, capsys, monkeypatch, stdin=stdin).jsonl()
    looked = run_cli([*args, "--prompt-lookup", "3"], capsys, monkeypatch, stdin=stdin).jsonl()
    assert [r["outputs"][0]["token_ids"] for r in looked] == [r["outputs"][0]["token_ids"] for r in plain]


def test_assisted_usage_errors(tiny_dir, tiny_untied_single, default_model_dir, capsys, monkeypatch):
    base = ["generate", "-m", str(tiny_dir), "hi"]
    both = [*base, "--prompt-lookup", "3", "--assistant-model", str(tiny_untied_single)]
    assert_clean_error(run_cli(both, capsys, monkeypatch), 2, "pick one")
    several = [*base, "--prompt-lookup", "3", "--num-return-sequences", "2", "-t", "1"]
    assert_clean_error(run_cli(several, capsys, monkeypatch), 2, "one sequence")
    assert_clean_error(run_cli([*base, "--prompt-lookup", "0"], capsys, monkeypatch), 2, "--prompt-lookup")
    other_vocab = [*base, "--assistant-model", str(default_model_dir)]
    assert_clean_error(run_cli(other_vocab, capsys, monkeypatch), 1, "tokenizer differs")
