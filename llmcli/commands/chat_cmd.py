"""`llmcli chat`: an interactive conversation on the same decoding flags as generate, history in the template."""

from __future__ import annotations

import json
import sys

import typer

from llmcli.commands.options import (
    AttnOpt,
    DeviceOpt,
    DtypeOpt,
    ModelOpt,
    QuantizeOpt,
    RevisionOpt,
    SystemOpt,
    ThreadsOpt,
    TrustOpt,
)

HELP = """commands:
  /system TEXT       set the system message (history is kept)
  /set KEY VALUE     change a decoding setting, e.g. /set temperature 0.7, /set max_new_tokens 64
  /reset             forget the conversation
  /save FILE         write the conversation as JSON
  /stats             figures of the last answer
  /help              this text
  /exit              leave (or Ctrl-D); Ctrl-C stops the current answer"""

SETTABLE = {
    "temperature": float,
    "top_p": float,
    "top_k": int,
    "min_p": float,
    "typical_p": float,
    "max_new_tokens": int,
    "min_new_tokens": int,
    "repetition_penalty": float,
    "no_repeat_ngram_size": int,
}


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)


def chat(
    model: ModelOpt = None,
    revision: RevisionOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    quantize: QuantizeOpt = "none",
    trust_remote_code: TrustOpt = False,
    attn: AttnOpt = "auto",
    threads: ThreadsOpt = None,
    system: SystemOpt = None,
    temperature: float = typer.Option(None, "--temperature", "-t"),
    top_p: float = typer.Option(None, "--top-p"),
    top_k: int = typer.Option(None, "--top-k"),
    max_new_tokens: int = typer.Option(None, "--max-new-tokens", "-n"),
    seed: int = typer.Option(None, "--seed"),
) -> None:
    """Talk to the model: answers stream, the history goes through the chat template; /help for commands."""
    from llmcli import output
    from llmcli.errors import UsageError
    from llmcli.genargs import DecodingFlags, build_generate_kwargs
    from llmcli.loader import load, resolve_model

    settings = {
        k: v
        for k, v in {
            "temperature": temperature,
            "top_p": top_p,
            "top_k": top_k,
            "max_new_tokens": max_new_tokens,
        }.items()
        if v is not None
    }
    kwargs = build_generate_kwargs(DecodingFlags(**settings))
    on_tty = output.stderr_is_tty()
    source = resolve_model(model, verbose_progress=on_tty, revision=revision)
    loaded = load(
        source,
        device,
        dtype,
        trust_remote_code,
        False,
        True,
        show_progress=on_tty,
        quantize=quantize,
        attn=attn,
        threads=threads,
    )
    if not getattr(loaded.tokenizer, "chat_template", None):
        raise UsageError("this model's tokenizer has no chat template; use `llmcli generate --raw` instead")
    interactive = sys.stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401 - line editing and history for input()
        except ImportError:
            pass
        output.warn(f"chatting with {source.label} ({loaded.dtype}, {loaded.device}); /help for commands")
    session = Session(loaded, kwargs, settings, system, seed)
    while True:
        try:
            line = input(">>> ") if interactive else sys.stdin.readline()
        except EOFError:
            break
        except KeyboardInterrupt:
            sys.stderr.write("\n")
            continue
        if not interactive and line == "":
            break
        line = line.rstrip("\n")
        if not line.strip():
            continue
        if line.startswith("/"):
            if not session.command(line):
                break
            continue
        session.ask(line)
    if interactive:
        sys.stderr.write("\n")


class Session:
    def __init__(self, loaded, kwargs, settings, system, seed):
        self.loaded = loaded
        self.kwargs = kwargs
        self.settings = settings
        self.system = system
        self.seed = seed
        self.history: list[dict[str, str]] = []
        self.last_stats = None

    def messages(self) -> list[dict[str, str]]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.history

    def ask(self, text: str) -> None:
        from llmcli import output
        from llmcli.genargs import needs_sampling
        from llmcli.runner import GenerationInterrupted, generate_batch, pick_seed

        self.history.append({"role": "user", "content": text})
        ids = list(
            self.loaded.tokenizer.apply_chat_template(
                self.messages(), add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
        )
        seed = pick_seed(self.seed, needs_sampling(self.kwargs, {}))
        write = lambda piece: output.write_stdout(piece, flush=True)  # noqa: E731
        try:
            result = generate_batch(self.loaded, [text], self.kwargs, seed, None, False, write, encoded=[ids])[0]
            answer = result.outputs[0].text
            self.last_stats = result.stats
        except GenerationInterrupted as stopped:  # Ctrl-C: keep what was said, carry on
            answer = stopped.results[0].outputs[0].text if stopped.results else ""
        except KeyboardInterrupt:
            answer = ""
        output.write_stdout("\n", flush=True)
        self.history.append({"role": "assistant", "content": answer})

    def command(self, line: str) -> bool:
        """Run a /command; False means leave."""
        from llmcli import output
        from llmcli.errors import LlmcliError, UsageError
        from llmcli.genargs import DecodingFlags, build_generate_kwargs

        name, _, rest = line.partition(" ")
        rest = rest.strip()
        try:
            if name in ("/exit", "/quit", "/bye"):
                return False
            if name == "/help":
                sys.stderr.write(HELP + "\n")
            elif name == "/system":
                self.system = rest or None
                output.warn("system message " + ("set" if rest else "cleared"))
            elif name == "/reset":
                self.history = []
                output.warn("conversation reset")
            elif name == "/set":
                key, _, value = rest.partition(" ")
                key = key.replace("-", "_")
                if key not in SETTABLE or not value.strip():
                    raise UsageError(f"/set KEY VALUE with KEY one of {', '.join(SETTABLE)}")
                try:
                    parsed = SETTABLE[key](value.strip())
                except ValueError:
                    raise UsageError(f"/set {key}: {value.strip()!r} is not a {SETTABLE[key].__name__}") from None
                settings = dict(self.settings, **{key: parsed})
                self.kwargs = build_generate_kwargs(DecodingFlags(**settings))
                self.settings = settings
                output.warn(f"{key} = {parsed}")
            elif name == "/save":
                if not rest:
                    raise UsageError("/save FILE")
                with open(rest, "w", encoding="utf-8") as fh:
                    json.dump(
                        {"messages": self.messages(), "generate_kwargs": self.kwargs}, fh, indent=2, ensure_ascii=False
                    )
                output.warn(f"saved {len(self.history)} messages to {rest}")
            elif name == "/stats":
                if self.last_stats is None:
                    output.warn("no answer yet")
                else:
                    output.print_stats(self.last_stats)
            else:
                raise UsageError(f"unknown command {name}; /help lists them")
        except (LlmcliError, OSError) as exc:
            message = exc.one_line() if isinstance(exc, LlmcliError) else f"{rest}: {exc.strerror or exc}"
            output.warn(f"error: {message}")
        return True
