"""`llmcli tokenize` and `llmcli detokenize`: what the model really receives, from the tokenizer alone."""

from __future__ import annotations

import typer

from llmcli.commands import options as opt
from llmcli.commands.model_options import ModelArgs, model_options


def register(app: typer.Typer) -> None:
    app.command("tokenize")(tokenize)
    app.command("detokenize")(detokenize)


@model_options("model", "revision", "trust_remote_code")
def tokenize(
    text: str = typer.Argument(None, help="Text to tokenize; '-' or piped stdin reads stdin."),
    chat: bool = typer.Option(False, "--chat", help="Render the chat template around the text first."),
    system: opt.SystemOpt = None,
    ids: bool = typer.Option(False, "--ids", help="Print only the ids, space-separated (pipe-friendly)."),
    file: opt.FileOpt = None,
    json_out: opt.JsonOpt = False,
    server: opt.ServerOpt = None,
    *,
    model_args: ModelArgs,
) -> None:
    """Show the tokens of a text: ids, pieces, character and byte spans, special tokens marked."""
    from llmcli import output
    from llmcli.prompts import check_system, single_prompt
    from llmcli.reports import tokens as tokens_report

    check_system(chat=chat, system=system)
    source_text = single_prompt(text, file)
    if server is not None:
        from llmcli import client

        model_args.refuse_local()
        body = {"model": model_args.model, "text": source_text, "chat": chat, "system": system}
        data = client.call(server, "tokenize", body)
        tokenizer_class = data.pop("tokenizer_class")
    else:
        from llmcli.engine.generate.tokens import token_table
        from llmcli.engine.load.loader import load_tokenizer

        source = model_args.source(verbose=output.stderr_is_tty())
        tok = load_tokenizer(source, spec=model_args.spec())
        data = {"model": str(source.path), **token_table(tok, source_text, chat=chat, system=system)}
        tokenizer_class = type(tok).__name__
    if ids:
        output.write_stdout(" ".join(str(r["id"]) for r in data["tokens"]) + "\n", flush=True)
        return
    output.present(tokens_report.build(data, tokenizer_class), json=json_out)


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
    from llmcli.engine.load.loader import load_tokenizer
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
    tok = load_tokenizer(source, spec=model_args.spec())
    size = len(tok)
    out_of_range = [v for v in values if v < 0 or v >= size]
    if out_of_range:
        raise UsageError(f"token id {out_of_range[0]} is outside the vocabulary (0..{size - 1})")
    text = tok.decode(values, skip_special_tokens=skip_special)
    if json_out:
        output.emit_json({"model": str(source.path), "token_ids": values, "text": text})
    else:
        output.write_stdout(text + "\n", flush=True)
