"""`llmcli dpo`: preference pairs scored as TRL scores them, every figure checked against a computation written
out here (and against TRL itself where it is installed), in float32 on two tiny models that share a tokenizer."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import pytest

from tests.helpers import ROOT, assert_clean_error, run_cli

STANDARD = [
    {"prompt": "The capital of France is", "chosen": " Paris.", "rejected": " London."},
    {"prompt": "Two and two make", "chosen": " four", "rejected": " seven, or so"},
    {"prompt": "hello", "chosen": " world", "rejected": " there, friend"},
]
CONVERSATIONAL = [
    {"prompt": [{"role": "user", "content": "Say hi"}], "chosen": [{"role": "assistant", "content": "Hi!"}],
     "rejected": [{"role": "assistant", "content": "Go away."}]},
]  # fmt: skip


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def dpo(policy, ref, pairs, capsys, monkeypatch, *extra):
    run = run_cli(["dpo", str(policy), "--ref", str(ref), "-f", str(pairs), "--dtype", "float32", *extra],
                  capsys, monkeypatch)  # fmt: skip
    assert run.code == 0, run.stderr
    return run


def each(run):
    return [json.loads(line) for line in run.stdout.splitlines()]


def completion_logps(model, prompt_ids, completion_ids):
    """Summed log p of the completion after the prompt, and the per-position distributions, one sequence alone."""
    import torch

    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.inference_mode():
        rows = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    rows = rows[len(prompt_ids) - 1 : len(prompt_ids) + len(completion_ids) - 1]
    return float(rows[torch.arange(len(completion_ids)), completion_ids].sum()), rows


@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "hinge"])
def test_every_figure_equals_the_computation_written_out(models, tiny_dir, tiny_untied_single, tmp_path, capsys,
                                                          monkeypatch, loss):  # fmt: skip
    policy, ref, tok = models
    pairs = write(tmp_path / "pairs.jsonl", STANDARD)
    rows = each(
        dpo(tiny_untied_single, tiny_dir, pairs, capsys, monkeypatch, "--each", "--beta", "0.3", "--loss", loss)
    )
    assert [r["line"] for r in rows] == [1, 2, 3]
    for row, pair in zip(rows, STANDARD, strict=True):
        prompt = tok(text=pair["prompt"])["input_ids"]
        figures = {}
        for side in ("chosen", "rejected"):
            whole = tok(text=pair["prompt"] + pair[side] + tok.eos_token)["input_ids"]
            assert whole[: len(prompt)] == prompt  # these prompts end on a token boundary
            completion = whole[len(prompt) :]
            pi, pi_rows = completion_logps(policy, prompt, completion)
            q, q_rows = completion_logps(ref, prompt, completion)
            kl = float((pi_rows.exp() * (pi_rows - q_rows)).sum(-1).mean())
            figures[side] = (pi, q, len(completion), kl)
            assert row[f"{side}_logps"] == pytest.approx(pi, rel=1e-5)
            assert row[f"ref_{side}_logps"] == pytest.approx(q, rel=1e-5)
            assert row[f"kl_{side}"] == pytest.approx(kl, rel=1e-4, abs=1e-7)
            assert row[f"{side}_tokens"] == len(completion)
        (pc, qc, nc, _), (pr, qr, nr, _) = figures["chosen"], figures["rejected"]
        delta = (pc - qc) - (pr - qr)
        expected = {"sigmoid": -math.log(1 / (1 + math.exp(-0.3 * delta))), "hinge": max(0.0, 1 - 0.3 * delta),
                    "ipo": ((pc - qc) / nc - (pr - qr) / nr - 1 / 0.6) ** 2}[loss]  # fmt: skip
        assert row["loss"] == pytest.approx(expected, rel=1e-5)
        assert row["margin"] == pytest.approx(0.3 * delta, rel=1e-5, abs=1e-7)
        assert row["correct"] == (delta > 0)


EMPTY_PROMPT = {"prompt": "", "chosen": "Paris is the capital.", "rejected": "London, surely."}


def test_an_empty_prompt_scores_the_completion_from_its_second_token_as_trl_does(
    models, tiny_dir, tiny_untied_single, tmp_path, capsys, monkeypatch
):
    policy, ref, tok = models
    lone = {"prompt": "", "chosen": tok.eos_token, "rejected": "Hello"}  # EOS alone: one token, nothing before it
    pairs = write(tmp_path / "pairs.jsonl", [EMPTY_PROMPT, lone])
    assert tok(text="")["input_ids"] == []  # no BOS: nothing precedes the completion's first token
    run = run_cli(["dpo", str(tiny_untied_single), "--ref", str(tiny_dir), "-f", str(pairs), "--dtype", "float32",
                   "--each", "--skip-bad"], capsys, monkeypatch)  # fmt: skip
    assert run.code == 0, run.stderr
    assert "line 2: the chosen completion is one token with nothing before it" in run.stderr
    (row,) = each(run)
    for side in ("chosen", "rejected"):
        whole = tok(text=EMPTY_PROMPT[side] + tok.eos_token)["input_ids"]
        # TRL's shifted loss mask: the first token is context, every later one is scored given those before it
        expected, _ = completion_logps(policy, whole[:1], whole[1:])
        assert row[f"{side}_logps"] == pytest.approx(expected, rel=1e-5)
        assert row[f"ref_{side}_logps"] == pytest.approx(completion_logps(ref, whole[:1], whole[1:])[0], rel=1e-5)
        assert row[f"{side}_tokens"] == len(whole) - 1
    assert row["moved"]["position"] >= 1
    ipo = run_cli(["dpo", str(tiny_untied_single), "--ref", str(tiny_dir), "-f", str(pairs), "--dtype", "float32",
                   "--each", "--skip-bad", "--loss", "ipo"], capsys, monkeypatch)  # fmt: skip
    (got,) = each(ipo)
    # TRL's IPO divides by its completion mask's count, which holds the unscored first token too
    lengths = {side: len(tok(text=EMPTY_PROMPT[side] + tok.eos_token)["input_ids"]) for side in ("chosen", "rejected")}
    ratios = {side: got[f"{side}_logps"] - got[f"ref_{side}_logps"] for side in lengths}
    expected = (ratios["chosen"] / lengths["chosen"] - ratios["rejected"] / lengths["rejected"] - 1 / 0.2) ** 2
    assert got["loss"] == pytest.approx(expected, rel=1e-6)


def test_extract_prompt_on_texts_that_differ_at_their_first_character():
    from llmcli.analysis.pairs import extract_prompt

    # TRL reads chosen[-1] here; a trailing space must not move the split before the start
    assert extract_prompt("Yes ", "No ") == ("", "Yes ", "No ")
    assert extract_prompt("Say yes", "Say no") == ("Say", " yes", " no")  # TRL's result where it is meaningful


def test_the_summary_averages_the_pairs_under_trls_names(tiny_dir, tiny_untied_single, tmp_path, capsys, monkeypatch):
    pairs = write(tmp_path / "pairs.jsonl", STANDARD)
    rows = each(dpo(tiny_untied_single, tiny_dir, pairs, capsys, monkeypatch, "--each"))
    data = dpo(tiny_untied_single, tiny_dir, pairs, capsys, monkeypatch, "--json", "--top", "2").json()
    assert data["pairs"] == 3 and data["beta"] == 0.1 and data["loss_type"] == "sigmoid"
    mean = lambda key: sum(float(r[key]) for r in rows) / 3  # noqa: E731
    assert data["summary"]["rewards/accuracies"] == pytest.approx(mean("correct"))
    assert data["summary"]["rewards/margins"] == pytest.approx(mean("margin"))
    assert data["summary"]["logps/rejected"] == pytest.approx(mean("rejected_logps"))
    assert [w["line"] for w in data["worst"]] == [r["line"] for r in sorted(rows, key=lambda r: r["margin"])][:2]
    shown = dpo(tiny_untied_single, tiny_dir, pairs, capsys, monkeypatch).stdout
    assert "rewards/accuracies" in shown and "lowest margin first" in shown


def test_conversational_and_implicit_prompt_pairs(models, tiny_dir, tiny_untied_single, tmp_path, capsys, monkeypatch):
    policy, ref, tok = models
    pair = CONVERSATIONAL[0]
    rows = each(dpo(tiny_untied_single, tiny_dir, write(tmp_path / "chat.jsonl", CONVERSATIONAL), capsys,
                    monkeypatch, "--each"))  # fmt: skip
    prompt = tok.apply_chat_template(pair["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True)
    whole = tok.apply_chat_template(pair["prompt"] + pair["chosen"], tokenize=True, return_dict=True)["input_ids"]
    start = len(prompt["input_ids"])
    assert whole[:start] == prompt["input_ids"]
    assert rows[0]["chosen_logps"] == pytest.approx(completion_logps(policy, whole[:start], whole[start:])[0], rel=1e-5)
    implicit = [{"chosen": p["prompt"] + p["chosen"], "rejected": p["prompt"] + p["rejected"]} for p in STANDARD]
    same = each(dpo(tiny_untied_single, tiny_dir, write(tmp_path / "implicit.jsonl", implicit), capsys,
                    monkeypatch, "--each"))  # fmt: skip
    explicit = each(dpo(tiny_untied_single, tiny_dir, write(tmp_path / "std.jsonl", STANDARD), capsys, monkeypatch,
                        "--each"))  # fmt: skip
    # TRL's extract_prompt leaves the space before the split with the completions: the same pairs as written
    assert [r["chosen_logps"] for r in same] == pytest.approx([r["chosen_logps"] for r in explicit], rel=1e-6)


def test_a_lora_policy_is_measured_against_its_base_with_the_adapter_off(tiny_dir, tiny_adapter, tmp_path, capsys,
                                                                          monkeypatch):  # fmt: skip
    pairs = write(tmp_path / "pairs.jsonl", STANDARD)
    one_copy = run_cli(["dpo", str(tiny_dir), "--adapter", str(tiny_adapter), "-f", str(pairs), "--json", "--dtype",
                        "float32"], capsys, monkeypatch)  # fmt: skip
    assert one_copy.code == 0, one_copy.stderr
    two = dpo(tiny_dir, tiny_dir, pairs, capsys, monkeypatch, "--adapter", str(tiny_adapter), "--json").json()
    by_dir = run_cli(["dpo", str(tiny_adapter), "-f", str(pairs), "--json", "--dtype", "float32"], capsys,
                     monkeypatch).json()  # fmt: skip
    for key, value in two["summary"].items():
        assert one_copy.json()["summary"][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
        assert by_dir["summary"][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    assert "(adapter off)" in one_copy.json()["reference"]["label"]


BAD = [
    ("{not json", "line 1: not JSON"),
    ('{"prompt": "a", "chosen": "b"}', "line 1: missing field 'rejected'"),
    ('{"prompt": "a", "chosen": "", "rejected": "c"}', "line 1: chosen is empty"),
    ('{"prompt": "a", "chosen": "b", "rejected": "b"}', "line 1: chosen equals rejected"),
    ('{"prompt": "a", "chosen": ["b"], "rejected": "c"}', "each message needs a role"),
    (json.dumps({"prompt": "x " * 400, "chosen": "a", "rejected": "b"}), "longer than the model's context of 256"),
]


@pytest.mark.parametrize("line,needle", BAD)
def test_a_bad_line_is_one_error_naming_it_and_skip_bad_goes_on(tiny_dir, tmp_path, capsys, monkeypatch, line, needle):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(line + "\n")
    run = run_cli(["dpo", str(tiny_dir), "--ref", str(tiny_dir), "-f", str(pairs)], capsys, monkeypatch)
    assert_clean_error(run, 1, needle)
    assert str(pairs) in run.stderr  # the file is named with the line
    pairs.write_text(line + "\n" + json.dumps(STANDARD[0]) + "\n")
    kept = run_cli(["dpo", str(tiny_dir), "--ref", str(tiny_dir), "-f", str(pairs), "--skip-bad", "--json"],
                   capsys, monkeypatch)  # fmt: skip
    assert kept.code == 0 and kept.json()["pairs"] == 1 and needle in kept.stderr


def test_skip_bad_with_no_pair_left_is_one_error(tiny_dir, tmp_path, capsys, monkeypatch):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "x " * 400, "chosen": "a", "rejected": "b"}) + "\n")
    run = run_cli(["dpo", str(tiny_dir), "--ref", str(tiny_dir), "-f", str(pairs), "--skip-bad"], capsys, monkeypatch)
    assert_clean_error(run, 1, str(pairs), "no pair left to score: every one was skipped")


def test_a_reference_that_tokenizes_differently_is_refused(tiny_dir, default_model_dir, tmp_path, capsys, monkeypatch):
    run = run_cli(["dpo", str(tiny_dir), "--ref", str(default_model_dir), "-f", str(write(tmp_path / "p.jsonl",
                   STANDARD))], capsys, monkeypatch)  # fmt: skip
    assert_clean_error(run, 2, "the policy and the reference tokenize differently: token id")


def test_a_kept_reference_pass_gives_the_same_figures_and_refuses_other_pairs_and_models(
    tiny_dir, tiny_untied_single, default_model_dir, tmp_path, capsys, monkeypatch
):
    pairs = write(tmp_path / "pairs.jsonl", STANDARD)
    kept = tmp_path / "ref.safetensors"
    live = dpo(tiny_untied_single, tiny_dir, pairs, capsys, monkeypatch, "--json", "--save-ref-logps", str(kept))
    assert kept.is_file() and "wrote the reference's log-probabilities of 3 pairs" in live.stderr
    args = ["dpo", str(tiny_untied_single), "-f", str(pairs), "--dtype", "float32", "--json", "--ref-logps", str(kept)]
    reused = run_cli(args, capsys, monkeypatch)
    assert reused.code == 0, reused.stderr
    for key, value in live.json()["summary"].items():
        expected = None if key.startswith("kl/") else pytest.approx(value, rel=1e-6, abs=1e-9)
        assert reused.json()["summary"][key] == expected, key
    assert reused.json()["reference"]["label"].endswith("(from ref.safetensors)")
    other = write(tmp_path / "other.jsonl", STANDARD[:2])
    refused = run_cli(["dpo", str(tiny_untied_single), "-f", str(other), "--ref-logps", str(kept)], capsys, monkeypatch)
    assert_clean_error(refused, 2, "made for other pairs")
    named = run_cli([*args, "--ref", str(tiny_untied_single)], capsys, monkeypatch)
    assert_clean_error(named, 2, "made with another reference model")
    foreign = run_cli(["dpo", str(default_model_dir), "-f", str(pairs), "--ref-logps", str(kept)], capsys, monkeypatch)
    assert_clean_error(foreign, 2, "made with another tokenizer")


def test_either_side_on_llmcli_serve_gives_the_local_figures(tiny_dir, tiny_untied_single, tmp_path, capsys,
                                                               monkeypatch):  # fmt: skip
    import signal

    from tests.server.test_serve import KEY, start_server

    pairs = write(tmp_path / "pairs.jsonl", [*STANDARD, EMPTY_PROMPT])
    local = each(dpo(tiny_untied_single, tiny_dir, pairs, capsys, monkeypatch, "--each"))
    proc, url = start_server(tiny_dir, "-m", str(tiny_untied_single), "--dtype", "float32")
    try:
        monkeypatch.setenv("LLMCLI_API_KEY", KEY)
        here = ["-f", str(pairs), "--dtype", "float32", "--each"]
        remote_ref = [str(tiny_untied_single), "--ref-server", url, "--ref", tiny_dir.name]
        remote_policy = [tiny_untied_single.name, "--server", url, "--ref", str(tiny_dir)]
        for args in (remote_ref, remote_policy):
            run = run_cli(["dpo", *args, *here], capsys, monkeypatch)
            assert run.code == 0, run.stderr
            for far, near in zip(each(run), local, strict=True):
                for key in ("ref_chosen_logps", "ref_rejected_logps", "margin", "loss", "chosen_logps"):
                    assert far[key] == pytest.approx(near[key], rel=1e-4, abs=1e-6), key
                assert far["kl_chosen"] is None and far["moved"]["token_id"] == near["moved"]["token_id"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


TRL_RUN = ROOT / "benchmarks" / "dpo_trl.py"


@pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason="TRL is not installed (a peer for measurements)")
@pytest.mark.parametrize("loss", ["sigmoid", "ipo"])
def test_equal_to_trls_own_evaluation(tiny_dir, tiny_untied_single, tmp_path, capsys, monkeypatch, loss):
    pairs = write(tmp_path / "pairs.jsonl", [*STANDARD, EMPTY_PROMPT])
    args = [sys.executable, str(TRL_RUN), str(tiny_untied_single), str(tiny_dir), str(pairs), "0.2", loss]
    printed = subprocess.run(args, capture_output=True, text=True, check=True, timeout=600).stdout
    trl = json.loads(printed.splitlines()[-1])  # TRL prints its logs on stdout too
    ours = dpo(tiny_untied_single, tiny_dir, pairs, capsys, monkeypatch, "--json", "--beta", "0.2", "--loss",
               loss).json()["summary"]  # fmt: skip
    for name in ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                 "logps/chosen", "logps/rejected"):  # fmt: skip
        assert ours[name] == pytest.approx(trl[f"eval_{name}"], rel=1e-4, abs=1e-6), name
