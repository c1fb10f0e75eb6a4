"""`llmcli dpo --loss kto`: unpaired, labelled rows scored as TRL's KTOTrainer scores them, every figure checked
against a computation written out here (and against TRL itself where it is installed), in float32 on two tiny
models that share a tokenizer."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import pytest

from tests.analysis.test_dpo import completion_logps, write
from tests.helpers import ROOT, assert_clean_error, run_cli

ROWS = [
    {"prompt": "The capital of France is", "completion": " Paris.", "label": True},
    {"prompt": "The capital of France is", "completion": " London.", "label": False},
    {"prompt": "Two and two make", "completion": " four", "label": True},
    {"prompt": "hello", "completion": " there, friend", "label": False},
    {"prompt": "", "completion": "Berlin is the capital of Germany.", "label": True},
]


def kto(policy, ref, rows, capsys, monkeypatch, *extra):
    run = run_cli(["dpo", str(policy), "--ref", str(ref), "-f", str(rows), "--dtype", "float32", "--loss", "kto",
                   *extra], capsys, monkeypatch)  # fmt: skip
    assert run.code == 0, run.stderr
    return run


def split(tok, prompt, completion):
    """Prompt and completion ids as TRL's KTO tokenizes a text row: the completion after the shared prefix."""
    p = tok(text=prompt)["input_ids"]
    whole = tok(text=prompt + completion + tok.eos_token)["input_ids"]
    start = next((i for i, (a, b) in enumerate(zip(p, whole, strict=False)) if a != b), min(len(p), len(whole)))
    return p[:start], whole[start:]


def summed(model, prompt, completion):
    """log p of the completion's tokens, each given those before it (a first token with nothing before: unscored)."""
    if not prompt:
        prompt, completion = completion[:1], completion[1:]
    return completion_logps(model, prompt, completion)[0]


def test_every_figure_equals_the_computation_written_out(models, tiny_dir, tiny_untied_single, tmp_path, capsys,
                                                          monkeypatch):  # fmt: skip
    policy, ref, tok = models
    data = write(tmp_path / "kto.jsonl", ROWS)
    weights = ["--desirable-weight", "1.5", "--undesirable-weight", "0.7"]
    rows = kto(tiny_untied_single, tiny_dir, data, capsys, monkeypatch, "--each", "--beta", "0.2", *weights).jsonl()
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5]
    ids = [split(tok, r["prompt"], r["completion"]) for r in ROWS]
    mismatched = [(p, ids[i - 1][1]) for i, (p, _) in enumerate(ids)]  # row i's prompt, row i-1's completion
    kl = max(sum(summed(policy, p, c) - summed(ref, p, c) for p, c in mismatched) / len(ROWS), 0.0)
    for row, given, (p, c) in zip(rows, ROWS, ids, strict=True):
        pi, q = summed(policy, p, c), summed(ref, p, c)
        assert row["logps"] == pytest.approx(pi, rel=1e-5) and row["ref_logps"] == pytest.approx(q, rel=1e-5)
        assert row["reward"] == pytest.approx(0.2 * (pi - q), rel=1e-4, abs=1e-7) and row["label"] is given["label"]
        z = 0.2 * ((pi - q) - kl) if given["label"] else 0.2 * (kl - (pi - q))
        weight = 1.5 if given["label"] else 0.7
        assert row["loss"] == pytest.approx(weight * (1 - 1 / (1 + math.exp(-z))), rel=1e-5)
    summary = kto(tiny_untied_single, tiny_dir, data, capsys, monkeypatch, "--json", "--beta", "0.2", *weights)
    figures = summary.json()["summary"]
    assert figures["kl"] == pytest.approx(kl, rel=1e-4, abs=1e-7)
    assert figures["loss"] == pytest.approx(sum(r["loss"] for r in rows) / 5, rel=1e-6)
    chosen = [r["reward"] for r in rows if r["label"]]
    assert figures["rewards/chosen"] == pytest.approx(sum(chosen) / 3, rel=1e-6)
    shown = kto(tiny_untied_single, tiny_dir, data, capsys, monkeypatch).stdout
    assert "KTO evaluation (3 desirable, 2 undesirable rows" in shown and "highest loss first" in shown


def test_bad_rows_and_options_are_one_line(tiny_dir, tmp_path, capsys, monkeypatch):
    unlabelled = write(tmp_path / "u.jsonl", [{"prompt": "a", "completion": "b"}])
    run = run_cli(["dpo", str(tiny_dir), "--ref", str(tiny_dir), "-f", str(unlabelled), "--loss", "kto"], capsys,
                  monkeypatch)  # fmt: skip
    assert_clean_error(run, 1, str(unlabelled), "line 1: label must be true (desirable) or false")
    pairs = write(tmp_path / "p.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}])
    run = run_cli(["dpo", str(tiny_dir), "--ref", str(tiny_dir), "-f", str(pairs), "--loss", "kto"], capsys,
                  monkeypatch)  # fmt: skip
    assert_clean_error(run, 1, "line 1: expected prompt, completion and label")
    run = run_cli(["dpo", "p", "--ref", "r", "-f", str(pairs), "--loss", "kto", "--ref-server", "http://x:1"], capsys,
                  monkeypatch)  # fmt: skip
    assert_clean_error(run, 2, "--loss kto scores both sides here")
    run = run_cli(["dpo", "p", "--ref", "r", "-f", str(pairs), "--loss", "kto", "--desirable-weight", "0"], capsys,
                  monkeypatch)  # fmt: skip
    assert_clean_error(run, 2, "must be > 0")


TRL_RUN = ROOT / "benchmarks" / "kto_trl.py"


@pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason="TRL is not installed (a peer for measurements)")
def test_equal_to_trls_own_evaluation(tiny_dir, tiny_untied_single, tmp_path, capsys, monkeypatch):
    data = write(tmp_path / "kto.jsonl", ROWS)
    args = [sys.executable, str(TRL_RUN), str(tiny_untied_single), str(tiny_dir), str(data), "0.2", "1.5", "0.7"]
    trl = json.loads(
        subprocess.run(args, capture_output=True, text=True, check=True, timeout=600).stdout.splitlines()[-1]
    )
    ours = kto(tiny_untied_single, tiny_dir, data, capsys, monkeypatch, "--json", "--beta", "0.2", "--desirable-weight",
               "1.5", "--undesirable-weight", "0.7").json()["summary"]  # fmt: skip
    for name in (
        "loss",
        "kl",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
    ):
        assert ours[name] == pytest.approx(trl[f"eval_{name}"], rel=1e-4, abs=1e-6), name
