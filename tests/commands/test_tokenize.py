"""tokenize and detokenize, checked against the tokenizer itself on a tiny model."""

from __future__ import annotations

from tests.helpers import assert_clean_error, run_cli

TEXT = "The capital of France is Paris. Héllo!"


def cli(tiny_dir, command, args, capsys, monkeypatch, stdin=None):
    return run_cli([command, "-m", str(tiny_dir), *args], capsys, monkeypatch, stdin=stdin)


def test_tokenize_ids_spans_and_specials(tiny_dir, direct, capsys, monkeypatch):
    _, tok = direct
    data = cli(tiny_dir, "tokenize", [TEXT, "--json"], capsys, monkeypatch).json()
    assert [t["id"] for t in data["tokens"]] == tok(TEXT)["input_ids"]
    assert data["count"] == len(data["tokens"])
    raw = TEXT.encode()
    position = 0
    for t in data["tokens"]:
        ba, bb = t["bytes"]
        assert ba == position and bb > ba  # byte spans tile the text exactly, even inside split characters
        position = bb
        if t["text"]:
            a, b = t["chars"]
            assert t["text"] == TEXT[a:b]
    assert position == len(raw)
    assert "".join(t["text"] for t in data["tokens"]) == TEXT
    assert any(t["text"] == "" for t in data["tokens"])  # 'é' is two byte-level tokens here
    ids = cli(tiny_dir, "tokenize", [TEXT, "--ids"], capsys, monkeypatch)
    assert ids.stdout.split() == [str(t["id"]) for t in data["tokens"]]
    chat = cli(tiny_dir, "tokenize", ["hi", "--chat", "--system", "Be brief.", "--json"], capsys, monkeypatch).json()
    assert chat["text"].startswith("<|im_start|>system\nBe brief.<|im_end|>")
    specials = [t["token"] for t in chat["tokens"] if t["special"]]
    assert specials[:2] == ["<|im_start|>", "<|im_end|>"]
    plain = cli(tiny_dir, "tokenize", [TEXT], capsys, monkeypatch)
    assert plain.code == 0 and f"{data['count']} tokens" in plain.stdout


def test_detokenize_round_trip(tiny_dir, direct, capsys, monkeypatch):
    _, tok = direct
    ids = tok(TEXT)["input_ids"]
    run = cli(tiny_dir, "detokenize", [str(i) for i in ids], capsys, monkeypatch)
    assert run.stdout == TEXT + "\n"
    piped = cli(tiny_dir, "detokenize", [], capsys, monkeypatch, stdin=" ".join(map(str, ids)).encode())
    assert piped.stdout == TEXT + "\n"
    assert_clean_error(cli(tiny_dir, "detokenize", ["12", "x"], capsys, monkeypatch), 2, "not a token id")
    assert_clean_error(cli(tiny_dir, "detokenize", ["999999"], capsys, monkeypatch), 2, "outside the vocabulary")
