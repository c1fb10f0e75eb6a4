"""`llmcli generate`: flags map one-to-one onto transformers' generate(); fit for pipes and scripts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from llmcli.commands import options as opt
from llmcli.commands.decoding_options import decoding_options, structure_options
from llmcli.commands.model_options import PLACEMENT, ModelArgs, model_options
from llmcli.errors import Interrupted, LlmcliError, UsageError
from llmcli.genargs import DecodingFlags
from llmcli.jobs import JobSpec
from llmcli.plan import Constraint

LOADING = (
    "model", "revision", "device", *PLACEMENT, "dtype", "trust_remote_code", "quantize", "compile", "attn", "threads",
    "adapter", "merge", "allow_pickle", "memory_check", "assistant_model",
)  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)


@model_options(*LOADING)
@decoding_options()
@structure_options()
def generate(
    prompt: str = typer.Argument(None, help="The prompt; '-' reads stdin. Piped stdin is put before it."),
    seed: opt.SeedOpt = None,
    set_: opt.SetOpt = None,
    show_config: bool = typer.Option(
        False,
        "--show-config",
        rich_help_panel=opt.H_DEC,
        help="Print the effective generation config and exit (no weights loaded).",
    ),
    system: opt.SystemOpt = None,
    raw: opt.RawOpt = False,
    file: opt.FileOpt = None,
    each_line: bool = typer.Option(
        False, "--each-line", rich_help_panel=opt.H_OUT, help="Every stdin line is a prompt (batched)."
    ),
    prompts_file: str = typer.Option(
        None, "--prompts", rich_help_panel=opt.H_OUT, help='File with one prompt per line, or JSONL {"prompt": ...}.'
    ),
    batch_size: int = typer.Option(
        8, "--batch-size", min=1, rich_help_panel=opt.H_OUT, help="Prompts per batch on the device."
    ),
    job_output: str = typer.Option(
        None,
        "--output",
        "-o",
        rich_help_panel=opt.H_OUT,
        help="With --server and --prompts: write the --json records here, in input order (a resumable job).",
    ),
    concurrency: int = typer.Option(
        4, "--concurrency", min=1, max=256, rich_help_panel=opt.H_OUT, help="--output: requests in flight at once."
    ),
    resume: bool = typer.Option(
        False, "--resume", rich_help_panel=opt.H_OUT, help="--output: skip the prompts the file already answers."
    ),
    json_out: opt.JsonOpt = False,
    logprobs: int = typer.Option(
        None,
        "--logprobs",
        min=0,
        rich_help_panel=opt.H_OUT,
        help="Log-probability of every generated token and its top N alternatives (in --json; colours the "
        "streamed text on a terminal).",
    ),
    server: opt.ServerOpt = None,
    stats: bool = typer.Option(
        False, "--stats", rich_help_panel=opt.H_OUT, help="Timing and memory figures on stderr."
    ),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", rich_help_panel=opt.H_OUT, help="Stats, plus transformers' own warnings."
    ),
    *,
    model_args: ModelArgs,
    decoding: DecodingFlags,
    constraint: Constraint | None,
) -> None:
    """Generate text; every decoding flag maps straight onto transformers' generate()."""
    from llmcli import output
    from llmcli.genargs import build_generate_kwargs
    from llmcli.plan import check_combinations

    decoding.extra, decoding.compile = list(set_ or []), model_args.compile
    kwargs = build_generate_kwargs(decoding)
    spec = model_args.spec()
    check_combinations(
        spec=spec,
        kwargs=kwargs,
        logprobs=logprobs,
        adapter_given=model_args.adapter is not None,
        constraint=constraint,
        assistant_given=model_args.assistant_model is not None,
    )
    if verbose:
        import os

        os.environ["TRANSFORMERS_VERBOSITY"] = "info"
    batch = each_line or prompts_file is not None
    prompts = None
    if not show_config or server is not None:  # over --server, --show-config shows the body with its prompts
        from llmcli.prompts import batch_prompts, single_prompt

        prompts = batch_prompts(each_line, prompts_file, prompt) if batch else [single_prompt(prompt, file)]
    if job_output is not None and (server is None or not batch):
        raise UsageError("--output writes a batch job's answers: it needs --server and --prompts (or --each-line)")
    if server is not None:
        body = _remote_body(model_args, decoding, constraint, prompts, seed=seed, logprobs=logprobs, system=system)
        if job_output is not None and not show_config:
            _job({**body, "raw": raw}, server, JobSpec(Path(job_output), concurrency, resume))
            return
        _remote(server, {**body, "raw": raw}, show_config=show_config, json_out=json_out, batch_size=batch_size)
        return
    source = model_args.source(verbose=spec.show_progress or verbose)
    if show_config:
        _show_config(source, kwargs, json_out=json_out)
        return
    spec = model_args.with_adapter(spec)
    run = _Run(source, spec, kwargs, seed=seed, logprobs=logprobs, json_out=json_out, constraint=constraint,
               plain_step=model_args.compile is False)  # fmt: skip
    if model_args.assistant_model is not None:
        run.add_assistant(model_args.assistant_model, spec)
    # generate() drafts for one sequence at a time (assisted and prompt-lookup decoding).
    assisted = model_args.assistant_model is not None or "prompt_lookup_num_tokens" in kwargs
    run.all(prompts, system=system, raw=raw, batch_size=batch_size if batch and not assisted else 1, batch=batch)
    if (stats or verbose) and run.last_stats is not None:
        output.print_stats(run.last_stats)
    if run.incomplete:
        raise _unsatisfied(run.incomplete, constraint)


def _unsatisfied(count: int, constraint: Constraint) -> LlmcliError:
    from llmcli.plan import CONSTRAINT_FLAGS

    return LlmcliError(
        f"{count} output(s) do not satisfy {CONSTRAINT_FLAGS[constraint.kind]}: cut short "
        f"(finish_reason length) or, for JSON, not a valid document (see `valid` in --json)",
        hint="raise --max-new-tokens",
    )


def _remote_body(model_args: ModelArgs, decoding: DecodingFlags, constraint, prompts, **fields) -> dict[str, Any]:
    """The request for llmcli's own endpoint; what configures a local load cannot travel and is refused."""
    model_args.refuse_local()
    body = {"model": model_args.model, "prompts": prompts, "flags": decoding.values, "set": decoding.extra, **fields}
    if constraint is not None:
        body["constraint"] = constraint.describe()
    return body


def _job(body: dict[str, Any], server: str, spec: Any) -> None:
    from llmcli import client, jobs, output

    def send(prompt: str) -> dict:
        return list(client.generate(server, {**body, "prompts": [prompt]}))[0]

    with client.pooled(server, spec.concurrency):
        count = jobs.run(body["prompts"], spec, send)
    output.warn(f"{spec.output}: all {len(body['prompts'])} prompts answered ({count} by this run)")


def _remote(url: str, body: dict[str, Any], *, show_config: bool, json_out: bool, batch_size: int) -> None:
    """generate's output, from a server: the same stream on stdout, the same --json objects."""
    from llmcli import client, output

    prompts = body["prompts"]
    streamed = not json_out and len(prompts) == 1
    if show_config:
        output.emit_json(client.preview(url, body, stream=streamed))
        return
    write = (lambda text: output.write_stdout(text, flush=True)) if streamed else None
    unsatisfied = 0
    for start in range(0, len(prompts), batch_size):
        for record in client.generate(url, {**body, "prompts": prompts[start : start + batch_size]}, on_text=write):
            for made_up in record.get("compensated", []):
                output.warn(f"{made_up['flag']}: {made_up['how']}")
            several = len(record["outputs"]) > 1
            _print_record(
                record, json_out=json_out, streamed=streamed and not several, separate=len(prompts) > 1 or several
            )
            unsatisfied += sum(o.get("valid") is False for o in record["outputs"])
    if unsatisfied:
        from llmcli.plan import Constraint

        raise _unsatisfied(unsatisfied, Constraint(**body["constraint"]))


def _print_record(record: dict[str, Any], *, json_out: bool, streamed: bool, separate: bool) -> None:
    """One prompt's `generate --json` object as generate prints it: the object, or the text not yet streamed."""
    from llmcli import output

    if json_out:
        output.emit_json(record)
    elif streamed:
        output.write_stdout("\n", flush=True)
    else:
        for out in record["outputs"]:
            output.write_stdout(out["text"] + ("\n\n" if separate else "\n"), flush=True)


def _show_config(source: Any, kwargs: dict[str, Any], *, json_out: bool) -> None:
    """The model's generation defaults overlaid with the flags, checked by GenerationConfig; no weights."""
    from llmcli import output
    from llmcli.genargs import effective_config
    from llmcli.modelfs.tokenizer import generation_defaults

    defaults = generation_defaults(source.path) or {}
    effective = effective_config(defaults, kwargs)
    if json_out:
        output.emit_json({"model": str(source.path), "defaults": defaults, "overrides": kwargs, "effective": effective})
        return
    rows = [
        (k, repr(v) if isinstance(v, str) else str(v), "override" if k in kwargs else "model default")
        for k, v in effective.items()
    ]
    title = f"Effective generation config ({source.label})"
    output.show([output.Section(title, [output.KV(rows)])], output.choose_mode(False))


class _Run:
    """The loaded model and the plan, printing each batch's results as they finish."""

    def __init__(self, source: Any, spec: Any, kwargs: dict[str, Any], *, seed, logprobs, json_out: bool, constraint,
                 plain_step: bool = False):  # fmt: skip
        from llmcli import output
        from llmcli.engine.load.loader import load
        from llmcli.genargs import checked_seed
        from llmcli.modelfs.tokenizer import generation_defaults
        from llmcli.plan import GenerationPlan

        seed_used = checked_seed(generation_defaults(source.path) or {}, kwargs, seed)
        grammar = None
        if constraint is not None:  # the grammar engine reads it before the weights load
            from llmcli.engine.generate.constraints import parse

            grammar = parse(constraint)
        self.loaded = load(source, spec)
        compiled = None
        if constraint is not None:
            from llmcli.engine.generate.constraints import compile_for

            compiled = compile_for(self.loaded, constraint, grammar, kwargs)
        self.plan = GenerationPlan(kwargs=kwargs, seed=seed_used, logprobs=logprobs, constraint=compiled,
                                   plain_step=plain_step)  # fmt: skip
        self.incomplete = 0
        self.model_info = self.loaded.describe()
        if spec.adapter is not None:
            self.model_info["adapter"] = {"path": str(spec.adapter), "merged": spec.merge}
        self.json_out = json_out
        self.colorize = logprobs is not None and output.choose_mode(json_out) == "rich"
        self.last_stats = None
        self.adapter = spec.adapter

    def replay(self) -> dict[str, Any] | None:
        """The replay block of --json records (computed once; nothing to compute for plain text)."""
        if not self.json_out:
            return None
        from llmcli.engine.load.environment import environment

        return environment(self.loaded, adapter=self.adapter)

    def add_assistant(self, path: str, spec: Any) -> None:
        """The draft model, loaded like the model; its tokenizer must be the model's."""
        from dataclasses import replace

        from llmcli.engine.load.loader import load
        from llmcli.modelfs.source import resolve_model

        assistant = load(resolve_model(path, verbose=spec.show_progress), replace(spec, adapter=None, merge=False))
        if assistant.tokenizer.get_vocab() != self.loaded.tokenizer.get_vocab():
            raise LlmcliError(
                "the assistant's tokenizer differs from the model's; assisted decoding needs the same vocabulary",
                path=assistant.source.path,
            )
        self.plan = replace(self.plan, assistant=assistant.model)
        self.model_info["assistant_model"] = str(assistant.source.path)

    def all(self, prompts: list[str], *, system, raw: bool, batch_size: int, batch: bool) -> None:
        for start in range(0, len(prompts), batch_size):
            self.one_batch(prompts[start : start + batch_size], system=system, raw=raw, batch=batch)

    def one_batch(self, prompts: list[str], *, system, raw: bool, batch: bool) -> None:
        from llmcli.engine.generate.generation import stream_generate

        streamed = not self.json_out and not batch
        stream = stream_generate(
            self.loaded, prompts, self.plan, system=system, raw=raw, stream_text=streamed, token_probs=self.colorize
        )
        with stream:
            self._consume(stream, batch=batch)

    def _consume(self, stream: Any, *, batch: bool) -> None:
        from llmcli import output
        from llmcli.engine.generate.generation import Finished, TextDelta

        write = output.confidence_writer() if self.colorize else None
        printed = False
        try:
            for event in stream:
                if isinstance(event, TextDelta):
                    write(event.text, event.prob) if write else output.write_stdout(event.text, flush=True)
                    printed = printed or bool(event.text)
                elif isinstance(event, Finished):
                    for result in event.results:
                        self._print(result, streamed=stream.stream_text, separate=batch or len(result.outputs) > 1)
                        self.last_stats = result.stats
                        self.incomplete += sum(o.valid is False for o in result.outputs)
        except KeyboardInterrupt:
            self._interrupted(stream.stop())
        except Exception:
            if printed:  # keep the partial text on its own line
                output.write_stdout("\n", flush=True)
            raise

    def _interrupted(self, results: list[Any]) -> None:
        from llmcli import output

        if self.json_out:
            for result in results:
                output.emit_json(result.as_json(self.model_info, self.replay()))
        else:
            output.write_stdout("\n", flush=True)
        raise Interrupted() from None

    def _print(self, result: Any, *, streamed: bool, separate: bool) -> None:
        _print_record(
            result.as_json(self.model_info, self.replay()), json_out=self.json_out, streamed=streamed, separate=separate
        )
