"""next-token, --logprobs and score, checked against direct computations on a tiny model."""

from __future__ import annotations

import math

import pytest

from tests.helpers import assert_clean_error, run_cli

TEXT = "The capital of France is Paris. Héllo!"


def last_logits(model, ids):
    import torch

    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].float()


def cli(tiny_dir, command, args, capsys, monkeypatch, stdin=None):
    return run_cli([command, "-m", str(tiny_dir), *args], capsys, monkeypatch, stdin=stdin)


def test_next_token_matches_softmax_with_temperature(tiny_dir, direct, capsys, monkeypatch):
    import torch

    model, tok = direct
    run = cli(
        tiny_dir,
        "next-token",
        [TEXT, "--raw", "--dtype", "float32", "--temperature", "0.5", "--top", "20", "--json"],
        capsys,
        monkeypatch,
    )
    assert run.code == 0, run.stderr
    data = run.json()
    z = last_logits(model, data["prompt_token_ids"])
    p1 = torch.softmax(z, -1)
    pt = torch.exp(z / 0.5) / torch.exp(z / 0.5).sum()  # the seed's P(w_i) = exp(z_i/T) / Σ_j exp(z_j/T)
    for c in data["candidates"]:
        assert c["prob"] == pytest.approx(float(p1[c["token_id"]]), rel=1e-4, abs=1e-7)
        assert c["prob_after"] == pytest.approx(float(pt[c["token_id"]]), rel=1e-4, abs=1e-7)
        assert c["kept"] is True
    probs = [c["prob"] for c in data["candidates"]]
    assert probs == sorted(probs, reverse=True)
    assert data["candidates"][-1]["cumulative"] == pytest.approx(sum(probs), rel=1e-6)
    expected_entropy = float(-(p1 * torch.log2(p1)).sum())
    assert data["entropy_bits"] == pytest.approx(expected_entropy, rel=1e-4)


def test_next_token_top_p_keeps_smallest_set_reaching_p(tiny_dir, direct, capsys, monkeypatch):
    import torch

    model, _ = direct
    data = cli(
        tiny_dir,
        "next-token",
        [TEXT, "--raw", "--dtype", "float32", "--top-p", "0.3", "--top", "60", "--json"],
        capsys,
        monkeypatch,
    ).json()
    p = torch.softmax(last_logits(model, data["prompt_token_ids"]), -1)
    order = torch.argsort(p, descending=True).tolist()
    mass, keep = 0.0, set()
    for index in order:
        keep.add(index)
        mass += float(p[index])
        if mass >= 0.3:
            break
    assert data["kept_tokens"] == len(keep)
    for c in data["candidates"]:
        assert c["kept"] == (c["token_id"] in keep)
    kept_mass = sum(float(p[i]) for i in keep)
    for c in data["candidates"]:
        if c["kept"]:
            assert c["prob_after"] == pytest.approx(float(p[c["token_id"]]) / kept_mass, rel=1e-4)


def test_next_token_top_k_and_rendering(tiny_dir, capsys, monkeypatch):
    data = cli(
        tiny_dir, "next-token", [TEXT, "--raw", "--top-k", "3", "--top", "6", "--json"], capsys, monkeypatch
    ).json()
    assert [c["kept"] for c in data["candidates"]] == [True, True, True, False, False, False]
    assert data["kept_tokens"] == 3
    plain = cli(tiny_dir, "next-token", [TEXT, "--raw", "--top-k", "3", "--top", "6"], capsys, monkeypatch)
    assert "kept" in plain.stdout and "█" in plain.stdout and "of" in plain.stdout
    assert_clean_error(cli(tiny_dir, "next-token", [TEXT, "--top-p", "2"], capsys, monkeypatch), 2, "--top-p")


def test_generate_logprobs_equal_direct_forward_passes(tiny_dir, direct, capsys, monkeypatch):
    import torch

    model, _ = direct
    run = run_cli(
        [
            "generate",
            "-m",
            str(tiny_dir),
            "--dtype",
            "float32",
            TEXT,
            "--raw",
            "--greedy",
            "-n",
            "5",
            "--min-new-tokens",
            "5",
            "--logprobs",
            "3",
            "--json",
        ],
        capsys,
        monkeypatch,
    )
    assert run.code == 0, run.stderr
    data = run.json()
    out = data["outputs"][0]
    assert len(out["logprobs"]) == len(out["token_ids"]) == 5
    ids = list(data["prompt_token_ids"])
    for entry, token in zip(out["logprobs"], out["token_ids"], strict=True):
        logp = torch.log_softmax(last_logits(model, ids), -1)
        assert entry["token_id"] == token
        assert entry["logprob"] == pytest.approx(float(logp[token]), abs=1e-4)
        assert [a["token_id"] for a in entry["top"]] == torch.topk(logp, 3).indices.tolist()
        assert entry["top"][0]["token_id"] == token  # greedy picks the top candidate
        ids.append(token)
    beams = run_cli(["generate", "-m", str(tiny_dir), "hi", "--num-beams", "2", "--logprobs", "2"], capsys, monkeypatch)
    assert_clean_error(beams, 2, "--logprobs")


def test_logprobs_colour_the_stream_on_a_terminal(tiny_dir, capsys, monkeypatch):
    monkeypatch.setenv("LLMCLI_OUTPUT", "rich")
    run = run_cli(
        ["generate", "-m", str(tiny_dir), TEXT, "--raw", "--greedy", "-n", "6", "--logprobs", "1"], capsys, monkeypatch
    )
    assert run.code == 0, run.stderr
    assert "\x1b[" in run.stdout


def test_score_perplexity_is_exp_mean_nll(tiny_dir, direct, capsys, monkeypatch):
    import torch

    model, tok = direct
    data = cli(tiny_dir, "score", [TEXT, "--dtype", "float32", "--json"], capsys, monkeypatch).json()
    ids = tok(TEXT)["input_ids"]
    assert data["token_ids"] == ids
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    nll = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]))
    assert data["mean_nll"] == pytest.approx(float(nll), rel=1e-4)
    assert data["perplexity"] == pytest.approx(math.exp(float(nll)), rel=1e-4)
    assert data["scored_tokens"] == len(ids) - 1
    assert data["tokens"][0]["logprob"] is None
    assert sum(t["logprob"] for t in data["tokens"][1:]) == pytest.approx(data["total_logprob"], rel=1e-5)
    plain = cli(tiny_dir, "score", [TEXT], capsys, monkeypatch)
    assert "perplexity" in plain.stdout
    assert_clean_error(cli(tiny_dir, "score", ["a"], capsys, monkeypatch), 2, "at least two tokens")


def test_next_token_takes_the_text_raw_unless_chat(tiny_dir, direct, capsys, monkeypatch):
    _, tok = direct
    raw = cli(tiny_dir, "next-token", [TEXT, "--json"], capsys, monkeypatch).json()
    assert raw["prompt_token_ids"] == tok(TEXT)["input_ids"]
    chat = cli(tiny_dir, "next-token", [TEXT, "--chat", "--json"], capsys, monkeypatch).json()
    messages = [{"role": "user", "content": TEXT}]
    expected = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert chat["prompt_token_ids"] == list(expected["input_ids"])
    assert_clean_error(cli(tiny_dir, "next-token", [TEXT, "--system", "x"], capsys, monkeypatch), 2, "--chat")


@pytest.mark.parametrize("source", ["argument", "file", "stdin"])
def test_score_takes_the_text_byte_for_byte(tiny_dir, direct, tmp_path, capsys, monkeypatch, source):
    _, tok = direct
    text = "def f(n):\n    return n\n"
    args, stdin = [text], None
    if source == "file":
        (tmp_path / "code.py").write_text(text)
        args = ["--file", str(tmp_path / "code.py")]
    elif source == "stdin":
        args, stdin = ["-"], text.encode()
    data = cli(tiny_dir, "score", [*args, "--json"], capsys, monkeypatch, stdin=stdin).json()
    assert data["token_ids"] == tok(text)["input_ids"]
    assert tok.decode(data["token_ids"]).endswith("return n\n")
