"""`llmcli chat`: an interactive conversation on the same decoding flags as generate, history in the template."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from llmcli.commands import options as opt
from llmcli.commands.decoding_options import decoding_options, structure_options
from llmcli.commands.model_options import PLACEMENT, ModelArgs, model_options
from llmcli.flags import BY_KEY, CHAT_KEYS
from llmcli.genargs import DecodingFlags

HELP = """commands:
  /system TEXT       set the system message (history is kept)
  /set KEY VALUE     change a decoding setting, e.g. /set temperature 0.7, /set max_new_tokens 64
                     (KEY: any decoding flag chat takes, with _ for -)
  /reset             forget the conversation
  /save FILE         write the conversation as JSON
  /stats             figures of the last answer
  /help              this text
  /exit              leave (or Ctrl-D); Ctrl-C stops the current answer"""


UNSATISFIED = "the answer does not satisfy the constraint: cut short (/set max_new_tokens) or invalid"


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)


@model_options(
    "model", "revision", "device", *PLACEMENT, "dtype", "quantize", "trust_remote_code", "compile", "attn", "threads"
)
@decoding_options(CHAT_KEYS)
@structure_options()
def chat(
    system: opt.SystemOpt = None,
    seed: opt.SeedOpt = None,
    server: opt.ServerOpt = None,
    *,
    model_args: ModelArgs,
    decoding: DecodingFlags,
    constraint: Any,
) -> None:
    """Talk to the model: answers stream, the history goes through the chat template; /help for commands."""
    from llmcli import output
    from llmcli.errors import UsageError
    from llmcli.genargs import build_generate_kwargs
    from llmcli.plan import check_combinations

    settings = dict(decoding.values)
    decoding.compile = bool(model_args.compile)
    kwargs = build_generate_kwargs(decoding)
    spec = model_args.spec()
    check_combinations(spec=spec, kwargs=kwargs, constraint=constraint)
    if server is not None:
        model_args.refuse_local()
        session: Session = RemoteSession(server, model_args.model, kwargs, settings, system, seed)
        session.constraint = constraint
        label = f"{model_args.model or 'the model'} on {server}"
    else:
        from llmcli.engine.load.loader import load

        source = model_args.source(verbose=spec.show_progress)
        loaded = load(source, spec)
        if not getattr(loaded.tokenizer, "chat_template", None):
            raise UsageError("this model's tokenizer has no chat template; use `llmcli generate --raw` instead")
        session = Session(loaded, kwargs, settings, system, seed)
        session.plain_step, session.compile = model_args.compile is False, decoding.compile
        session.constraint = _compile(loaded, constraint, kwargs) if constraint is not None else None
        label = f"{source.label} ({loaded.dtype}, {loaded.device})"
    interactive = sys.stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401 - line editing and history for input()
        except ImportError:
            pass
        output.warn(f"chatting with {label}; /help for commands")
    while True:
        try:
            line = input(">>> ") if interactive else sys.stdin.readline()
        except EOFError:
            break
        except KeyboardInterrupt:
            output.stderr_text()
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
        output.stderr_text()


def _compile(loaded, constraint, kwargs):
    from llmcli.engine.generate.constraints import compile_for, parse

    return compile_for(loaded, constraint, parse(constraint), kwargs)


class Session:
    """The conversation and the settings, answered by a model loaded here."""

    def __init__(self, loaded, kwargs, settings, system, seed):
        self.loaded = loaded
        self.kwargs = kwargs
        self.settings = settings
        self.system = system
        self.seed = seed
        self.history: list[dict[str, str]] = []
        self.last_stats = None
        self.constraint = None  # engine.generate.constraints.Compiled: every answer follows it
        self.records: list[dict] = []  # each answer's generate --json record, replay block included
        self.plain_step = False  # --no-compile
        self.compile = False  # --compile: /set keeps it

    def saved(self) -> dict:
        """What /save writes: the conversation, the settings, and each answer's record (`llmcli replay` reruns
        them)."""
        return {"messages": self.messages(), "generate_kwargs": self.kwargs, "records": self.records}

    def messages(self) -> list[dict[str, str]]:
        from llmcli.prompts import chat_messages

        return chat_messages(self.system, self.history)

    def ask(self, text: str) -> None:
        from llmcli import output
        from llmcli.engine.generate.generation import TextDelta, stream_generate
        from llmcli.genargs import needs_sampling, pick_seed
        from llmcli.plan import GenerationPlan

        self.history.append({"role": "user", "content": text})
        ids = list(
            self.loaded.tokenizer.apply_chat_template(
                self.messages(), add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
        )
        seed = pick_seed(self.seed, sampling=needs_sampling(self.kwargs, {}))
        plan = GenerationPlan(kwargs=self.kwargs, seed=seed, constraint=self.constraint, plain_step=self.plain_step)
        answer = ""
        with stream_generate(self.loaded, [text], plan, encoded=[ids], stream_text=True) as stream:
            try:
                for event in stream:
                    if isinstance(event, TextDelta):
                        output.write_stdout(event.text, flush=True)
                    else:
                        from llmcli.engine.load.environment import environment

                        answer = event.results[0].outputs[0].text
                        self.last_stats = event.results[0].stats
                        self.records.append(event.results[0].as_json(self.loaded.describe(), environment(self.loaded)))
                        if event.results[0].outputs[0].valid is False:
                            output.warn(UNSATISFIED)
            except KeyboardInterrupt:  # Ctrl-C: keep what was said, carry on
                partial = stream.stop()
                answer = partial[0].outputs[0].text if partial else ""
        output.write_stdout("\n", flush=True)
        self.history.append({"role": "assistant", "content": answer})

    def set(self, rest: str) -> None:
        """/set KEY VALUE: any decoding flag chat offers, parsed and checked as the command line does."""
        from llmcli import output
        from llmcli.errors import UsageError
        from llmcli.genargs import build_generate_kwargs

        key, _, value = rest.partition(" ")
        key = key.replace("-", "_")
        settable = [k for k in CHAT_KEYS if BY_KEY[k].type is not list]
        if key not in settable or not value.strip():
            raise UsageError(f"/set KEY VALUE with KEY one of {', '.join(settable)}")
        parsed = BY_KEY[key].parse(value)
        settings = dict(self.settings, **{key: parsed})
        self.kwargs = build_generate_kwargs(DecodingFlags(compile=self.compile, **settings))
        self.settings = settings
        output.warn(f"{key} = {parsed}")

    def command(self, line: str) -> bool:
        """Run a /command; False means leave."""
        from llmcli import output
        from llmcli.errors import LlmcliError, UsageError

        name, _, rest = line.partition(" ")
        rest = rest.strip()
        try:
            if name in ("/exit", "/quit", "/bye"):
                return False
            if name == "/help":
                output.stderr_text(HELP)
            elif name == "/system":
                self.system = rest or None
                output.warn("system message " + ("set" if rest else "cleared"))
            elif name == "/reset":
                self.history = []
                output.warn("conversation reset")
            elif name == "/set":
                self.set(rest)
            elif name == "/save":
                if not rest:
                    raise UsageError("/save FILE")
                with open(rest, "w", encoding="utf-8") as fh:
                    json.dump(self.saved(), fh, indent=2, ensure_ascii=False)
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


class RemoteSession(Session):
    """The conversation answered by `llmcli serve`: the whole history goes with each question."""

    def __init__(self, server: str, model: str | None, kwargs, settings, system, seed):
        super().__init__(None, kwargs, settings, system, seed)
        self.server, self.model = server, model

    def ask(self, text: str) -> None:
        from llmcli import client, output
        from llmcli.engine.generate.records import Stats

        self.history.append({"role": "user", "content": text})
        said: list[str] = []

        def write(piece: str) -> None:
            said.append(piece)
            output.write_stdout(piece, flush=True)

        body = {"model": self.model, "messages": self.messages(), "flags": self.settings, "seed": self.seed}
        if self.constraint is not None:  # plan.Constraint: the server compiles it
            body["constraint"] = self.constraint.describe()
        answer = ""
        try:
            for record in client.generate(self.server, body, on_text=write):
                self.records.append(record)
                answer = record["outputs"][0]["text"]
                self.last_stats = Stats(**record["stats"])
                if record["outputs"][0].get("valid") is False:
                    output.warn(UNSATISFIED)
        except KeyboardInterrupt:  # Ctrl-C: the connection closes, the server stops; keep what was said
            answer = "".join(said)
        output.write_stdout("\n", flush=True)
        self.history.append({"role": "assistant", "content": answer})
