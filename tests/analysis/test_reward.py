"""`llmcli reward`: a reward model's scores equal its head's logit computed directly, one sequence at a time, on
the texts TRL's RewardTrainer builds; the summary equals the figures written out here (and TRL's own evaluation
where TRL is installed); inspect shows the head; bad input is one line."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import pytest

from tests.analysis.test_dpo import CONVERSATIONAL, STANDARD, write
from tests.helpers import ROOT, assert_clean_error, build_tokenizer, run_cli


def build_reward_model(path, *, labels=1, seed=0):
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tok = build_tokenizer(path)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, num_labels=labels,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():
        model.score.weight.normal_(0, 1.0)  # a seeded head whose scores spread
    model.save_pretrained(str(path))
    return model.eval(), tok


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("reward")
    model, tok = build_reward_model(path)
    return path, model, tok


def direct(model, ids):
    import torch

    with torch.inference_mode():
        return float(model(input_ids=torch.tensor([ids])).logits[0, 0])


def text_ids(tok, prompt, completion):
    return tok(text=prompt + completion + tok.eos_token)["input_ids"]


def reward(args, capsys, monkeypatch):
    run = run_cli(["reward", *args, "--dtype", "float32"], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    return run


def test_each_score_is_the_heads_logit_and_the_summary_is_trls(reward_model, tmp_path, capsys, monkeypatch):
    path, model, tok = reward_model
    pairs = write(tmp_path / "pairs.jsonl", STANDARD)
    rows = reward([str(path), "-f", str(pairs), "--each"], capsys, monkeypatch).jsonl()
    assert [r["line"] for r in rows] == [1, 2, 3]
    for row, pair in zip(rows, STANDARD, strict=True):
        assert row["chosen"] == pytest.approx(direct(model, text_ids(tok, pair["prompt"], pair["chosen"])), abs=1e-4)
        assert row["rejected"] == pytest.approx(
            direct(model, text_ids(tok, pair["prompt"], pair["rejected"])), abs=1e-4
        )
    data = reward([str(path), "-f", str(pairs), "--json"], capsys, monkeypatch).json()
    margins = [r["chosen"] - r["rejected"] for r in rows]
    every = [s for r in rows for s in (r["chosen"], r["rejected"])]
    expected = {"accuracy": sum(m > 0 for m in margins) / 3, "margin": sum(margins) / 3,
                "loss": sum(math.log1p(math.exp(-m)) for m in margins) / 3, "mean_reward": sum(every) / 6,
                "min_reward": min(every), "max_reward": max(every)}  # fmt: skip
    assert data["summary"] == pytest.approx(expected, rel=1e-6)
    assert data["kind"] == "pairs" and data["count"] == 3
    assert [r["line"] for r in data["shown"]] == [r["line"] for r in sorted(rows, key=lambda r: r["margin"])]
    shown = reward([str(path), "-f", str(pairs)], capsys, monkeypatch).stdout
    assert "accuracy" in shown and "lowest margin first" in shown


def test_conversations_go_through_the_chat_template_and_unpaired_lines_get_a_score(reward_model, tmp_path, capsys,
                                                                                    monkeypatch):  # fmt: skip
    path, model, tok = reward_model
    [row] = reward([str(path), "-f", str(write(tmp_path / "chat.jsonl", CONVERSATIONAL)), "--each"], capsys,
                   monkeypatch).jsonl()  # fmt: skip
    pair = CONVERSATIONAL[0]
    ids = tok.apply_chat_template(pair["prompt"] + pair["chosen"], tokenize=True, return_dict=True)["input_ids"]
    assert row["chosen"] == pytest.approx(direct(model, ids), abs=1e-4)
    unpaired = [{"prompt": "The capital of France is", "completion": " Paris."}, {"completion": "Hello world"}]
    rows = reward([str(path), "-f", str(write(tmp_path / "u.jsonl", unpaired)), "--each"], capsys,
                  monkeypatch).jsonl()  # fmt: skip
    assert rows[0]["score"] == pytest.approx(
        direct(model, text_ids(tok, "The capital of France is", " Paris.")), abs=1e-4
    )
    assert rows[1]["score"] == pytest.approx(direct(model, text_ids(tok, "", "Hello world")), abs=1e-4)
    data = reward([str(path), "-f", str(tmp_path / "u.jsonl"), "--json"], capsys, monkeypatch).json()
    assert data["kind"] == "completions" and set(data["summary"]) == {"mean_reward", "min_reward", "max_reward"}


def test_inspect_shows_the_classification_head(reward_model, capsys, monkeypatch):
    path, _, _ = reward_model
    data = run_cli(["inspect", str(path), "--json"], capsys, monkeypatch).json()
    head = data["head"]
    assert head["architecture"] == "LlamaForSequenceClassification" and head["num_labels"] == 1
    assert head["layer"] == "score" and head["shape"] == [1, 64] and head["reward_model"] is True
    assert "Classification head" in run_cli(["inspect", str(path)], capsys, monkeypatch).stdout


def test_bad_input_is_one_line(reward_model, tiny_dir, tmp_path, capsys, monkeypatch):
    path, _, _ = reward_model
    pairs = write(tmp_path / "pairs.jsonl", STANDARD)
    run = run_cli(["reward", str(tiny_dir), "-f", str(pairs)], capsys, monkeypatch)
    assert_clean_error(run, 1, "not a reward model: config.json names LlamaForCausalLM")
    two = tmp_path / "two"
    build_reward_model(two, labels=2)
    assert_clean_error(run_cli(["reward", str(two), "-f", str(pairs)], capsys, monkeypatch), 1, "has 2 labels")
    mixed = write(tmp_path / "mixed.jsonl", [STANDARD[0], {"prompt": "a", "completion": "b"}])
    assert_clean_error(run_cli(["reward", str(path), "-f", str(mixed)], capsys, monkeypatch), 1,
                       str(mixed), "line 2: a completion in a file of pairs")  # fmt: skip
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n')
    assert_clean_error(run_cli(["reward", str(path), "-f", str(bad)], capsys, monkeypatch), 1, "line 1: expected")
    assert_clean_error(run_cli(["reward", str(path)], capsys, monkeypatch), 2, "-f data.jsonl")
    served = run_cli(["reward", str(path), "-f", str(pairs), "--server", "http://127.0.0.1:9"], capsys, monkeypatch)
    assert_clean_error(served, 2, "reward --server")


TRL_RUN = ROOT / "benchmarks" / "reward_trl.py"


@pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason="TRL is not installed (a peer for measurements)")
@pytest.mark.parametrize("rows", [STANDARD, CONVERSATIONAL], ids=["standard", "conversational"])
def test_equal_to_trls_own_evaluation(reward_model, tmp_path, capsys, monkeypatch, rows):
    path, _, _ = reward_model
    pairs = write(tmp_path / "pairs.jsonl", rows)
    printed = subprocess.run([sys.executable, str(TRL_RUN), str(path), str(pairs)], capture_output=True, text=True,
                             check=True, timeout=600).stdout  # fmt: skip
    trl = json.loads(printed.splitlines()[-1])
    ours = reward([str(path), "-f", str(pairs), "--json"], capsys, monkeypatch).json()["summary"]
    for name in ("loss", "accuracy", "margin", "min_reward", "mean_reward", "max_reward"):
        assert ours[name] == pytest.approx(trl[f"eval_{name}"], rel=1e-4, abs=1e-6), name
