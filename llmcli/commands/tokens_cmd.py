"""`llmcli tokenize` and `llmcli detokenize`: what the model really receives, from the tokenizer alone."""

from __future__ import annotations

import typer

from llmcli.commands import options as opt
from llmcli.commands.model_options import ModelArgs, model_options


def register(app: typer.Typer) -> None:
    app.command("tokenize")(tokenize)
    app.command("detokenize")(detokenize)


def _byte_level_map() -> dict[str, int]:
    """GPT-2's byte-level alphabet: every byte shown as one printable character."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def spans(text: str, offsets: list[tuple[int, int]], pieces: list[str]) -> list[tuple[str, int, int]]:
    """For each token: its text and UTF-8 byte span. Byte-level tokens that split one character share its
    character span; the bytes tell them apart, and the character's text goes to the first of them."""
    byte_at = [0]
    for ch in text:
        byte_at.append(byte_at[-1] + len(ch.encode("utf-8")))
    alphabet = _byte_level_map()
    out: list[tuple[str, int, int]] = []
    prev_char_end, prev_byte_end = 0, 0
    for (a, b), piece in zip(offsets, pieces, strict=True):
        if a == b:  # special or empty tokens occupy no text
            out.append(("", byte_at[a], byte_at[a]))
            continue
        shares = out and a < prev_char_end
        start = prev_byte_end if shares else byte_at[a]
        whole_piece = piece and all(ch in alphabet for ch in piece)
        end = min(start + len(piece), byte_at[b]) if whole_piece else byte_at[b]
        out.append(("" if shares else text[a:b], start, end))
        prev_char_end, prev_byte_end = b, end
    return out


@model_options("model", "revision", "trust_remote_code")
def tokenize(
    text: str = typer.Argument(None, help="Text to tokenize; '-' or piped stdin reads stdin."),
    chat: bool = typer.Option(False, "--chat", help="Render the chat template around the text first."),
    system: opt.SystemOpt = None,
    ids: bool = typer.Option(False, "--ids", help="Print only the ids, space-separated (pipe-friendly)."),
    file: opt.FileOpt = None,
    json_out: opt.JsonOpt = False,
    *,
    model_args: ModelArgs,
) -> None:
    """Show the tokens of a text: ids, pieces, character and byte spans, special tokens marked."""
    from llmcli import output
    from llmcli.errors import UsageError
    from llmcli.prompts import chat_messages, single_prompt

    if system and not chat:
        raise UsageError("--system goes with --chat")
    from llmcli.engine.loader import load_tokenizer

    source_text = single_prompt(text, file)
    source = model_args.source(verbose=output.stderr_is_tty())
    tok = load_tokenizer(source, trust_remote_code=model_args.spec().trust_remote_code)
    rendered = source_text
    if chat:
        if not getattr(tok, "chat_template", None):
            raise UsageError("--chat: this model's tokenizer has no chat template")
        messages = chat_messages(system, [{"role": "user", "content": source_text}])
        rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    add_special = not chat  # a rendered template already carries its special tokens
    try:
        enc = tok(rendered, add_special_tokens=add_special, return_offsets_mapping=True)
        offsets = [tuple(o) for o in enc["offset_mapping"]]
    except NotImplementedError:  # slow tokenizers have no offsets
        enc = tok(rendered, add_special_tokens=add_special)
        offsets = [(0, 0)] * len(enc["input_ids"])
    token_ids = list(enc["input_ids"])
    special = set(getattr(tok, "all_special_ids", []) or [])
    pieces = tok.convert_ids_to_tokens(token_ids)
    located = spans(rendered, offsets, pieces)
    rows = [
        {
            "index": i,
            "id": tid,
            "token": pieces[i],
            "text": located[i][0],
            "chars": list(offsets[i]),
            "bytes": [located[i][1], located[i][2]],
            "special": tid in special,
        }
        for i, tid in enumerate(token_ids)
    ]
    if ids:
        output.write_stdout(" ".join(str(t) for t in token_ids) + "\n", flush=True)
        return
    data = {"model": str(source.path), "text": rendered, "count": len(token_ids), "chat": chat, "tokens": rows}
    from llmcli.reports import tokens as tokens_report

    output.present(tokens_report.build(data, type(tok).__name__), json=json_out)


@model_options("model", "revision", "trust_remote_code")
def detokenize(
    token_ids: list[str] = typer.Argument(None, help="Token ids (or '-' / piped stdin: ids separated by spaces)."),
    skip_special: bool = typer.Option(False, "--skip-special", help="Leave special tokens out."),
    json_out: opt.JsonOpt = False,
    *,
    model_args: ModelArgs,
) -> None:
    """Turn token ids back into text."""
    from llmcli import output
    from llmcli.engine.loader import load_tokenizer
    from llmcli.errors import UsageError
    from llmcli.prompts import read_stdin, stdin_has_data

    words = list(token_ids or [])
    if words == ["-"] or (not words and stdin_has_data()):
        words = read_stdin().replace(",", " ").split()
    if not words:
        raise UsageError("no token ids given")
    try:
        values = [int(w) for w in words]
    except ValueError:
        bad = next(w for w in words if not w.lstrip("-").isdigit())
        raise UsageError(f"not a token id: {bad!r}") from None
    source = model_args.source(verbose=output.stderr_is_tty())
    tok = load_tokenizer(source, trust_remote_code=model_args.spec().trust_remote_code)
    size = len(tok)
    out_of_range = [v for v in values if v < 0 or v >= size]
    if out_of_range:
        raise UsageError(f"token id {out_of_range[0]} is outside the vocabulary (0..{size - 1})")
    text = tok.decode(values, skip_special_tokens=skip_special)
    if json_out:
        output.emit_json({"model": str(source.path), "token_ids": values, "text": text})
    else:
        output.write_stdout(text + "\n", flush=True)
