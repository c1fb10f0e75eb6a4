"""Perplexity over long texts in strided windows, `compare` of two models, reference files: each figure equals a
direct transformers computation (float32)."""

from __future__ import annotations

import math

import pytest

from tests.helpers import assert_clean_error, run_cli

WORDS = (
    "the capital of France is Paris and the capital of Italy is Rome while Berlin is the capital of Germany "
    "tokens become ids and ids become vectors so the model predicts the next token"
).split()


def text_of(count: int) -> str:
    return " ".join(WORDS[(i * 7) % len(WORDS)] for i in range(count))


def ok(run):
    assert run.code == 0, run.stderr
    return run.json()


def strided_direct(model_dir, text, window, stride):
    """transformers' perplexity guide, as written there: labels -100 outside each window's new tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    ids = tok(text, return_tensors="pt").input_ids
    nll_sum, n_tokens, prev_end = 0.0, 0, 0
    for begin in range(0, ids.size(1), stride):
        end = min(begin + window, ids.size(1))
        trg_len = end - prev_end
        input_ids = ids[:, begin:end]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model(input_ids, labels=target_ids).loss
        # The model shifts the labels: it predicts labels[1:], so a window's first label is never scored (the
        # guide's `- batch_size` undercounts every window after the first, whose first label is -100 anyway).
        valid = (target_ids[:, 1:] != -100).sum().item()
        nll_sum += loss.item() * valid
        n_tokens += valid
        prev_end = end
        if end == ids.size(1):
            break
    return nll_sum / n_tokens, n_tokens


def test_score_windows_equal_the_guide_on_the_default_model(default_model_dir, capsys, monkeypatch):
    text = text_of(150)
    args = ["score", "-m", str(default_model_dir), text, "--window", "64", "--stride", "32", "--json"]
    data = ok(run_cli(args, capsys, monkeypatch))
    mean, count = strided_direct(default_model_dir, text, 64, 32)
    assert data["scored_tokens"] == count == data["token_count"] - 1
    assert data["mean_nll"] == pytest.approx(mean, abs=1e-4)
    assert data["perplexity"] == pytest.approx(math.exp(mean), rel=1e-4)
    assert sum(w["scored"] for w in data["windows"]) == count and data["windows"][0]["begin"] == 0
    assert data["perplexity_stderr"] > 0 and (data["window"], data["stride"]) == (64, 32)


def test_a_text_longer_than_the_context_is_windowed_by_default(tiny_dir, capsys, monkeypatch):
    text = text_of(400)  # the tiny model's context is 256 tokens
    data = ok(run_cli(["score", "-m", str(tiny_dir), "--dtype", "float32", text, "--json"], capsys, monkeypatch))
    assert data["token_count"] > 256 and (data["window"], data["stride"]) == (256, 128)
    mean, count = strided_direct(tiny_dir, text, 256, 128)
    assert data["scored_tokens"] == count and data["mean_nll"] == pytest.approx(mean, abs=1e-4)


def direct_compare(base_dir, cand_dir, text, window, stride):
    """Both models' full distributions at every scored position of the same windows."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base_dir))
    ids = tok(text, return_tensors="pt").input_ids[0]
    models = [AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32).eval() for d in (base_dir, cand_dir)]
    kl, reverse, agree, scored_to = [], [], [], 1
    for begin in range(0, len(ids), stride):
        end = min(begin + window, len(ids))
        if end > scored_to:
            with torch.no_grad():
                p, q = (torch.log_softmax(m(ids[None, begin:end]).logits[0].float(), -1) for m in models)
            rows = slice(scored_to - begin - 1, end - begin - 1)
            p, q = p[rows], q[rows]
            kl += (p.exp() * (p - q)).sum(-1).tolist()
            reverse += (q.exp() * (q - p)).sum(-1).tolist()
            agree += (p.argmax(-1) == q.argmax(-1)).tolist()
            scored_to = end
        if end == len(ids):
            break
    return kl, reverse, sum(agree) / len(agree)


def test_compare_equals_a_direct_computation(default_model_dir, perturbed_default, capsys, monkeypatch):
    text = text_of(150)
    args = ["compare", str(default_model_dir), str(perturbed_default), "--text", text, "--window", "64",
            "--stride", "32", "--dtype", "float32", "--json"]  # fmt: skip
    data = ok(run_cli(args, capsys, monkeypatch))
    kl, reverse, agreement = direct_compare(default_model_dir, perturbed_default, text, 64, 32)
    assert data["scored_tokens"] == len(kl)
    assert data["kl"]["mean"] == pytest.approx(sum(kl) / len(kl), rel=1e-3)
    assert data["kl_reverse"]["mean"] == pytest.approx(sum(reverse) / len(reverse), rel=1e-3)
    assert data["kl"]["max"] == pytest.approx(max(kl), rel=1e-3) and data["kl"]["mean"] > 0
    assert data["top1_agreement"] == pytest.approx(agreement)
    top = data["top_positions"][0]
    assert top["kl"] == pytest.approx(max(kl), rel=1e-3) and len(top["base"]["top"]) == 5
    assert data["base"]["perplexity"] != data["candidate"]["perplexity"]


def test_a_model_compared_with_itself(default_model_dir, capsys, monkeypatch):
    args = ["compare", str(default_model_dir), "--text", text_of(80), "--window", "64", "--json"]
    data = ok(run_cli(args, capsys, monkeypatch))
    assert data["kl"]["mean"] == 0.0 and data["kl"]["max"] == 0.0 and data["kl_reverse"]["max"] == 0.0
    assert data["top1_agreement"] == 1.0 and data["perplexity_ratio"] == 1.0 and data["delta_p"]["rms"] == 0.0


def test_a_reference_file_gives_the_live_figures(default_model_dir, perturbed_default, tmp_path, capsys, monkeypatch):
    text, ref = text_of(150), tmp_path / "base.ref"
    windows = ["--window", "64", "--stride", "32"]
    scored = ok(run_cli(["score", "-m", str(default_model_dir), text, *windows, "--save-ref", str(ref), "--json"],
                        capsys, monkeypatch))  # fmt: skip
    assert scored["reference"]["k"] == 64 and ref.stat().st_size == scored["reference"]["bytes"]
    assert scored["reference"]["full_logits_bytes_per_token"] / scored["reference"]["bytes_per_token"] >= 50
    live = ok(run_cli(["compare", str(default_model_dir), str(perturbed_default), "--text", text, *windows,
                       "--json"], capsys, monkeypatch))  # fmt: skip
    far = ok(run_cli(["compare", "--base-ref", str(ref), str(perturbed_default), "--text", text, "--json"],
                     capsys, monkeypatch))  # fmt: skip
    assert far["reference"]["tail_samples"] == 64 and (far["window"], far["stride"]) == (64, 32)
    assert far["reference"]["kl_lower_bound_mean"] <= live["kl"]["mean"] * (1 + 1e-6)
    assert far["kl"]["mean"] == pytest.approx(live["kl"]["mean"], rel=0.02)
    assert far["kl_reverse"]["mean"] == pytest.approx(live["kl_reverse"]["mean"], rel=0.02)
    assert far["top1_agreement"] == pytest.approx(live["top1_agreement"])
    assert far["base"]["perplexity"] == pytest.approx(live["base"]["perplexity"], rel=1e-5)
    assert far["candidate"]["perplexity"] == pytest.approx(live["candidate"]["perplexity"], rel=1e-5)


def test_a_candidate_adapter_shares_the_base_weights(tiny_dir, tiny_adapter, capsys, monkeypatch):
    text = text_of(60)
    args = ["compare", str(tiny_dir), "--text", text, "--candidate-adapter", str(tiny_adapter), "--json"]
    data = ok(run_cli([*args, "--dtype", "float32"], capsys, monkeypatch))
    plain = ok(run_cli(["score", "-m", str(tiny_dir), text, "--json"], capsys, monkeypatch))
    adapted = ok(run_cli(["score", "-m", str(tiny_dir), text, "--adapter", str(tiny_adapter), "--json"],
                         capsys, monkeypatch))  # fmt: skip
    assert data["base"]["perplexity"] == pytest.approx(plain["perplexity"], rel=1e-5)
    assert data["candidate"]["perplexity"] == pytest.approx(adapted["perplexity"], rel=1e-5)
    assert data["kl"]["mean"] > 0 and data["candidate"]["adapter"] == str(tiny_adapter)


@pytest.fixture(scope="module")
def tiny_ref(tiny_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "tiny.ref"
    from llmcli.cli import main

    with pytest.raises(SystemExit) as done:
        main(["score", "-m", str(tiny_dir), text_of(60), "--window", "32", "--save-ref", str(path), "--json"])
    assert done.value.code in (0, None) and path.exists()
    return path


def test_bad_input(tiny_dir, default_model_dir, tiny_ref, tmp_path, capsys, monkeypatch):
    score = ["score", "-m", str(tiny_dir)]
    assert_clean_error(run_cli([*score, "hi", "--window", "1000"], capsys, monkeypatch), 2, "larger than the model's")
    assert_clean_error(run_cli([*score, "hi there", "--stride", "0"], capsys, monkeypatch), 2, "--stride 0")
    assert_clean_error(run_cli([*score, "hi", "--window", "8", "--stride", "9"], capsys, monkeypatch), 2, "--stride 9")
    assert_clean_error(run_cli([*score, "a", "--window", "8"], capsys, monkeypatch), 2, "at least two tokens")
    missing = tmp_path / "no" / "such" / "x.ref"
    assert_clean_error(run_cli([*score, "hi there you", "--save-ref", str(missing)], capsys, monkeypatch), 1)
    assert not missing.parent.exists()

    compare = ["compare", "--text", text_of(60)]
    bad = tmp_path / "bad.ref"
    bad.write_bytes(b"not a reference at all")
    assert_clean_error(run_cli([*compare, "--base-ref", str(bad), str(tiny_dir)], capsys, monkeypatch), 1, str(bad))
    cut = tmp_path / "cut.ref"
    cut.write_bytes(tiny_ref.read_bytes()[:-100])
    assert_clean_error(run_cli([*compare, "--base-ref", str(cut), str(tiny_dir)], capsys, monkeypatch), 1, str(cut))
    other = run_cli([*compare, "--base-ref", str(tiny_ref), str(default_model_dir)], capsys, monkeypatch)
    assert_clean_error(other, 2, "another tokenizer")
    window = run_cli([*compare, "--base-ref", str(tiny_ref), str(tiny_dir), "--window", "16"], capsys, monkeypatch)
    assert_clean_error(window, 2, "--window 32, not 16")
    other_text = ["compare", "--text", "another text", "--base-ref", str(tiny_ref), str(tiny_dir)]
    text = run_cli(other_text, capsys, monkeypatch)
    assert_clean_error(text, 2, "disagree")
    tokenizers = run_cli([*compare, str(tiny_dir), str(default_model_dir)], capsys, monkeypatch)
    assert_clean_error(tokenizers, 2, "the tokenizers disagree on the text at token")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
