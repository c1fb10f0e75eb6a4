"""`llmcli sample`: N completions per prompt under seeds derived per completion (each equal to a solo generate
run under its seed, in float32), every reward and advantage equal to TRL's GRPO formulas written out here, the
kept SFT rows and pairs, a killed run resumed, and bad input as one line."""

from __future__ import annotations

import json
import math

import pytest

from tests.analysis.test_dpo import write
from tests.helpers import assert_clean_error, run_cli

PROMPTS = [
    {"prompt": "The capital of France is", "answer": "Paris"},
    {"prompt": "Hello world! What is", "answer": "Berlin"},
    {"prompt": [{"role": "user", "content": "What is the capital of Germany?"}], "answer": "Berlin"},
]
FUNCS = """
def has_answer(prompts, completions, answer, **kwargs):
    texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
    return [1.0 if a.lower() in t.lower() else 0.0 for t, a in zip(texts, answer)]


def letters(prompts, completions, completion_ids, **kwargs):
    texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
    return [float(len(set(t))) if len(ids) and len(set(t)) % 4 else None for t, ids in zip(texts, completion_ids)]


def raises(prompts, completions, **kwargs):
    if "Germany" in str(prompts[0]):
        raise ValueError("no Germany here")
    return [0.0] * len(completions)


def too_few(prompts, completions, **kwargs):
    return [0.0]
"""


@pytest.fixture
def files(tmp_path):
    (tmp_path / "funcs.py").write_text(FUNCS)
    return write(tmp_path / "prompts.jsonl", PROMPTS), tmp_path / "funcs.py"


def sample(tiny_dir, prompts, capsys, monkeypatch, *extra):
    run = run_cli(["sample", "-m", str(tiny_dir), "-f", str(prompts), "--dtype", "float32", "--max-new-tokens", "8",
                   "--seed", "11", *extra], capsys, monkeypatch)  # fmt: skip
    assert run.code == 0, run.stderr
    return run


def test_each_completion_is_a_solo_generate_under_its_own_seed(tiny_dir, files, capsys, monkeypatch):
    prompts, funcs = files
    groups = sample(tiny_dir, prompts, capsys, monkeypatch, "-n", "3", "--reward-func", f"{funcs}:has_answer",
                    "--each").jsonl()  # fmt: skip
    assert [g["line"] for g in groups] == [1, 2, 3] and all(len(g["completions"]) == 3 for g in groups)
    for group in groups[:2]:  # text prompts go to the model as they are, as TRL gives them
        for c in group["completions"]:
            assert c["seed"] == 11 + 3 * (group["line"] - 1) + c["index"]
            solo = run_cli(["generate", "-m", str(tiny_dir), "--raw", "--dtype", "float32", "--max-new-tokens", "8",
                            "--do-sample", "--seed", str(c["seed"]), "--json", group["prompt"]], capsys,
                           monkeypatch).json()  # fmt: skip
            assert solo["outputs"][0]["text"] == c["text"] and len(solo["outputs"][0]["token_ids"]) == c["tokens"]


def trl_group(rewards, scale, batch_std=None):
    """TRL 1.16's sum_then_normalize with torch's NaN-aware mean and Bessel-corrected std, written out."""
    import torch

    r = torch.tensor([math.nan if v is None else v for v in rewards], dtype=torch.float64)
    mean = torch.nanmean(r)
    kept = r[~torch.isnan(r)]
    std = kept.std() if len(kept) > 1 else torch.tensor(math.nan, dtype=torch.float64)
    divisor = torch.tensor(batch_std, dtype=torch.float64) if scale == "batch" else std
    adv = r - mean
    if scale != "none":
        adv = adv / (divisor + 1e-4)
    return torch.nan_to_num(adv, nan=0.0).tolist(), bool(
        torch.isclose(divisor, torch.zeros((), dtype=torch.float64), atol=1e-8)
    )


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_rewards_and_advantages_are_trls(tiny_dir, files, capsys, monkeypatch, scale):
    prompts, funcs = files
    args = ["-n", "4", "--reward-func", f"{funcs}:has_answer", "--reward-func", f"{funcs}:letters",
            "--reward-weights", "2,0.5", "--scale-rewards", scale]  # fmt: skip
    run = sample(tiny_dir, prompts, capsys, monkeypatch, *args, "--json")
    data = run.json()
    groups = data["groups"]
    missing = sum(c["rewards"]["letters"] is None for g in groups for c in g["completions"])
    if missing:
        assert f"reward letters gave no value (None or NaN) for {missing} completion(s)" in run.stderr
    totals = []
    for group in groups:
        texts = [c["text"] for c in group["completions"]]
        for c in group["completions"]:
            assert c["rewards"]["has_answer"] == (
                1.0 if PROMPTS[group["line"] - 1]["answer"].lower() in c["text"].lower() else 0.0
            )
            distinct = len(set(c["text"]))
            assert c["rewards"]["letters"] == (float(distinct) if distinct % 4 else None)
            parts = [(2.0, c["rewards"]["has_answer"]), (0.5, c["rewards"]["letters"])]
            total = sum(w * v for w, v in parts if v is not None)
            assert c["reward"] == pytest.approx(total)
            totals.append(total)
        assert len(texts) == 4
    batch_std = float(__import__("statistics").stdev(totals))
    for group in groups:
        expected, zero = trl_group([c["reward"] for c in group["completions"]], scale, batch_std)
        assert [c["advantage"] for c in group["completions"]] == pytest.approx(expected, abs=1e-9)
        assert group["zero_std"] is zero
    summary = data["summary"]
    assert summary["reward"] == pytest.approx(sum(totals) / len(totals))
    assert summary["frac_reward_zero_std"] == sum(g["zero_std"] for g in groups) / 3
    lengths = [c["tokens"] for g in groups for c in g["completions"]]
    assert summary["completions/max_length"] == max(lengths) and summary["completions/min_length"] == min(lengths)
    clipped = sum(c["finish_reason"] == "length" for g in groups for c in g["completions"]) / 12
    assert summary["completions/clipped_ratio"] == pytest.approx(clipped)
    assert set(summary) >= {"rewards/has_answer/mean", "rewards/letters/mean", "reward_std"}
    assert len(set(totals)) > 3  # rewards that spread: the advantages are not all 0


def test_kept_completions_become_sft_rows_and_pairs(tiny_dir, files, tmp_path, capsys, monkeypatch):
    prompts, funcs = files
    sft, pairs = tmp_path / "sft.jsonl", tmp_path / "pairs.jsonl"
    data = sample(tiny_dir, prompts, capsys, monkeypatch, "-n", "4", "--reward", "logprob", "--keep", "top-2",
                  "--sft", str(sft), "--pairs", str(pairs), "--json").json()  # fmt: skip
    rows = [json.loads(line) for line in sft.read_text().splitlines()]
    assert len(rows) == 6
    for group, kept in zip(data["groups"], (rows[0:2], rows[2:4], rows[4:6]), strict=True):
        best = sorted(group["completions"], key=lambda c: -c["reward"])[:2]
        if isinstance(group["prompt"], str):
            assert kept == [{"prompt": group["prompt"], "completion": c["text"]} for c in best]
        else:
            assert kept[0]["completion"] == [{"role": "assistant", "content": best[0]["text"]}]
    made = [json.loads(line) for line in pairs.read_text().splitlines()]
    spread = [g for g in data["groups"] if not g["zero_std"]]
    assert len(made) == len(spread)
    best = max(spread[0]["completions"], key=lambda c: c["reward"])
    assert made[0]["chosen"] == best["text"] and made[0]["prompt"] == spread[0]["prompt"]
    alpaca = tmp_path / "alpaca.jsonl"
    sample(tiny_dir, prompts, capsys, monkeypatch, "-n", "2", "--reward", "logprob", "--sft", str(alpaca),
           "--sft-format", "alpaca")  # fmt: skip
    third = json.loads(alpaca.read_text().splitlines()[2])
    assert (
        set(third) == {"instruction", "input", "output"} and third["instruction"] == PROMPTS[2]["prompt"][0]["content"]
    )
    run = run_cli(["dpo", str(tiny_dir), "--ref", str(tiny_dir), "-f", str(pairs), "--dtype", "float32", "--json"],
                  capsys, monkeypatch)  # fmt: skip
    assert run.code == 0 and run.json()["pairs"] == len(made)  # dpo reads what sample writes


def test_a_killed_run_resumes_with_nothing_lost_or_twice(tiny_dir, files, tmp_path, capsys, monkeypatch):
    prompts, funcs = files
    out = tmp_path / "groups.jsonl"
    args = ["-n", "2", "--reward-func", f"{funcs}:has_answer", "-o", str(out)]
    sample(tiny_dir, prompts, capsys, monkeypatch, *args)
    whole = out.read_text().splitlines()
    out.write_text(whole[0] + "\n" + whole[1][:40])  # killed while writing the second line
    sample(tiny_dir, prompts, capsys, monkeypatch, *args, "--resume")
    assert out.read_text().splitlines() == whole  # the same seeds: the same groups
    again = run_cli(["sample", "-m", str(tiny_dir), "-f", str(prompts), *args], capsys, monkeypatch)
    assert_clean_error(again, 2, "exists; --resume continues")


def test_bad_input_is_one_line(tiny_dir, files, tmp_path, capsys, monkeypatch):
    prompts, funcs = files
    base = ["sample", "-m", str(tiny_dir), "-f", str(prompts), "--max-new-tokens", "4", "-n", "2"]
    run = run_cli([*base, "--reward-func", f"{funcs}:raises"], capsys, monkeypatch)
    assert_clean_error(run, 1, "reward function raises raised ValueError on the prompt on line 3: no Germany here")
    run = run_cli([*base, "--reward-func", f"{funcs}:too_few"], capsys, monkeypatch)
    assert_clean_error(run, 1, "returned 1 values for 2 completions on the prompt on line 1")
    run = run_cli([*base, "--reward-func", f"{funcs}:missing"], capsys, monkeypatch)
    assert_clean_error(run, 1, str(funcs), "has no function named missing")
    nowhere = ["sample", "-m", str(tmp_path / "no-model"), "-f", str(prompts), "--reward-func", f"{funcs}:missing"]
    assert_clean_error(run_cli(nowhere, capsys, monkeypatch), 1, "has no function named missing")  # before loading
    run = run_cli([*base, "--reward-func", str(tmp_path / "nope.py:f")], capsys, monkeypatch)
    assert_clean_error(run, 1, "no such reward function file")
    run = run_cli([*base, "--reward-func", "funcs:f"], capsys, monkeypatch)
    assert_clean_error(run, 2, "expected FILE.py:NAME")
    run = run_cli([*base, "--reward", "logprob", "--keep", "top-3", "--sft", str(tmp_path / "s.jsonl")], capsys,
                  monkeypatch)  # fmt: skip
    assert_clean_error(run, 2, "--keep top-3: K must be between 1 and -n (2)")
    run = run_cli([*base, "--reward", "logprob", "--reward-weights", "1,2"], capsys, monkeypatch)
    assert_clean_error(run, 2, "gives 2 weights for 1 rewards")
    bad = write(tmp_path / "bad.jsonl", [{"prompt": "ok"}, {"question": "no prompt"}])
    run = run_cli(["sample", "-m", str(tiny_dir), "-f", str(bad)], capsys, monkeypatch)
    assert_clean_error(run, 1, str(bad), "line 2: expected a non-empty prompt")
    run = run_cli([*base, "--reward", str(tiny_dir)], capsys, monkeypatch)
    assert_clean_error(run, 1, "not a reward model")


def test_on_llmcli_serve_the_groups_are_the_local_ones(tiny_dir, files, capsys, monkeypatch):
    """Choice i of a request runs under its seed + i on llmcli serve: the same seeds, the same completions."""
    import signal

    from tests.server.test_serve import KEY, start_server

    prompts, funcs = files
    text_only = write(prompts.parent / "text.jsonl", PROMPTS[:2])
    args = ["-f", str(text_only), "--max-new-tokens", "8", "--seed", "5", "-n", "3", "--reward-func",
            f"{funcs}:has_answer", "--json"]  # fmt: skip
    local = run_cli(["sample", "-m", str(tiny_dir), "--dtype", "float32", *args], capsys, monkeypatch)
    assert local.code == 0, local.stderr
    proc, url = start_server(tiny_dir, "--dtype", "float32")
    try:
        monkeypatch.setenv("LLMCLI_API_KEY", KEY)
        far = run_cli(["sample", "--server", url, *args], capsys, monkeypatch)
        assert far.code == 0, far.stderr
        for mine, theirs in zip(local.json()["groups"], far.json()["groups"], strict=True):
            assert [c["text"] for c in mine["completions"]] == [c["text"] for c in theirs["completions"]]
            assert [c["advantage"] for c in mine["completions"]] == pytest.approx(
                [c["advantage"] for c in theirs["completions"]]
            )
        chat = run_cli(["sample", "--server", url, "-f", str(prompts), "-n", "2"], capsys, monkeypatch)
        assert_clean_error(chat, 1, "line 3: a conversational prompt")
        bare = run_cli(["sample", "--server", url, "-f", str(text_only), "-n", "2", "--json"], capsys, monkeypatch)
        assert bare.code == 0 and bare.json()["summary"]["reward"] is None  # no reward asked: none given
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
