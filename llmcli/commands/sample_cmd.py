"""`llmcli sample -f prompts.jsonl -n 8`: N completions per prompt, each scored (reward models, reward functions
written for TRL's GRPOTrainer, or the policy's own log-probability), every group summarised as GRPO sees it,
and what rejection sampling keeps written as SFT data or preference pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from llmcli.commands import options as opt
from llmcli.commands.decoding_options import decoding_options
from llmcli.commands.model_options import ModelArgs, model_options
from llmcli.errors import UsageError
from llmcli.genargs import DecodingFlags

LOADING = ("model", "revision", "device", "dtype", "trust_remote_code", "quantize", "attn", "threads", "adapter",
           "merge", "allow_pickle", "memory_check")  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command("sample")(sample)


@model_options(*LOADING)
@decoding_options(taken=("-n",))
def sample(
    file: str = typer.Option(None, "--file", "-f", help="JSONL prompts: prompt (text or messages) and any columns."),
    n: int = typer.Option(
        8, "-n", "--num-samples", help="Completions per prompt (GRPO's group size; --max-new-tokens has no -n here)."
    ),
    reward: list[str] = typer.Option(None, "--reward", help="A reward model's directory, or logprob (repeatable)."),
    reward_func: list[str] = typer.Option(
        None, "--reward-func", help="FILE.py:NAME, a reward function as TRL's GRPOTrainer calls it (repeatable)."
    ),
    reward_weights: str = typer.Option(None, "--reward-weights", help="Comma-separated, --reward then --reward-func."),
    scale_rewards: str = typer.Option("group", "--scale-rewards", help="Advantages' scale: group, batch or none."),
    keep: str = typer.Option(None, "--keep", help="With --sft: best, top-K or above=X."),
    sft: str = typer.Option(None, "--sft", help="Write the kept completions here as SFT data (JSONL)."),
    sft_format: str = typer.Option(
        "prompt-completion", "--sft-format", help="prompt-completion or messages (TRL's), or alpaca."
    ),
    pairs: str = typer.Option(None, "--pairs", help="Write best-vs-worst preference pairs here (JSONL)."),
    job_output: str = typer.Option(None, "--output", "-o", help="Write each prompt's group here as it finishes."),
    resume: bool = typer.Option(False, "--resume", help="--output: skip the prompts the file already holds."),
    top: int = typer.Option(20, "--top", min=0, max=10000, help="How many groups to show on a terminal."),
    each: bool = typer.Option(False, "--each", help="One JSON line per prompt on stdout, as each finishes."),
    seed: opt.SeedOpt = None,
    set_: opt.SetOpt = None,
    server: opt.ServerOpt = None,
    json_out: opt.JsonOpt = False,
    *,
    model_args: ModelArgs,
    decoding: DecodingFlags,
) -> None:
    """N completions per prompt, scored, with GRPO's group figures (TRL's names); rejection sampling's SFT data
    and preference pairs."""
    checked = _check(file, n, reward or [], reward_func or [], reward_weights, scale_rewards, keep, sft, sft_format,
                     pairs, job_output, resume, server)  # fmt: skip
    from llmcli import output
    from llmcli.analysis import sample_files as files
    from llmcli.analysis import sample_run, sampling

    rows = sampling.read_prompts(Path(file))
    records = files.Records(Path(job_output) if job_output else None, resume=resume, rows=rows)  # before loading
    reward_spec = sample_run.RewardSpec(reward or [], reward_func or [], checked["weights"])
    funcs = sample_run.load_funcs(reward_spec)
    if server is not None:
        engine, model_info, kwargs, seed_used = _remote(server, model_args, decoding, set_, n=n, seed=seed)
    else:
        kwargs, seed_used = _plan_kwargs(decoding, set_, model_args, seed)
        engine = _load(model_args)
        info = engine.describe()
        model_info = {"path": info["path"], "dtype": info["dtype"]}
    rewards = sample_run.load_rewards(reward_spec, funcs, policy=None if server is not None else engine,
                                      load_model=lambda m: _reward_model(m, model_args))  # fmt: skip
    from llmcli.plan import GenerationPlan

    groups = []
    todo = rows[records.done :]
    with output.progress(len(todo), "sampling", enabled=output.stderr_is_tty() and not each) as advance:
        plan = GenerationPlan(kwargs=kwargs, seed=seed_used)
        for group in sample_run.run(engine, todo, plan, rewards, n=n, seed=seed_used, scale=scale_rewards):
            records.write(group, each=each)
            groups.append(group)
            advance()
    groups = records.earlier + groups
    _report_missing(groups, rewards.names)
    written = files.write_kept(groups, checked["keep"], sft=sft, pairs=pairs, sft_format=sft_format)
    if each:
        return
    _present(groups, model_info, rewards, file=file, n=n, seed=seed_used, scale=scale_rewards, kwargs=kwargs,
             written=written, top=top, json_out=json_out)  # fmt: skip


def _load(model_args: ModelArgs) -> Any:
    from llmcli.engine.load.loader import load

    spec = model_args.with_adapter(model_args.spec())
    return load(model_args.source(verbose=spec.show_progress), spec)


def _remote(server: str, model_args: ModelArgs, decoding: DecodingFlags, set_: list[str] | None, *, n: int,
            seed: int | None) -> tuple:  # fmt: skip
    """--server: a function asking the server for one completion of a prompt under a seed (llmcli's generate
    endpoint, or the engine's own), what the record names, the flags sent and the base seed."""
    from llmcli import client
    from llmcli.errors import LlmcliError
    from llmcli.genargs import pick_seed

    model_args.refuse_local()
    flags = {"do_sample": True, **decoding.values}
    body = {"model": model_args.model, "flags": flags, "set": list(set_ or []), "raw": True}

    def send(row: Any, row_seed: int) -> dict[str, Any]:
        if row.conversational:
            raise LlmcliError(f"line {row.line}: a conversational prompt is rendered by the model's chat template "
                              "here; with --server give text prompts")  # fmt: skip
        return list(client.generate(server, {**body, "prompts": [row.prompt], "seed": row_seed}))[0]

    info = {"path": f"{model_args.model or 'the served model'} at {server}", "dtype": "the server's"}
    return send, info, flags, pick_seed(seed, sampling=True)


def _check(file, n, reward, reward_func, weights, scale, keep, sft, sft_format, pairs, job_output, resume,
           server) -> dict[str, Any]:  # fmt: skip
    """Usage errors, before anything loads or runs."""
    from llmcli.sample_plan import SCALES, SFT_FORMATS, parse_keep, parse_spec

    if file is None:
        raise UsageError("sample needs the prompts: -f prompts.jsonl")
    if n < 1:
        raise UsageError(f"-n must be at least 1, got {n}")
    if server is not None and "logprob" in reward:
        raise UsageError("--reward logprob scores with the policy loaded here; with --server use a reward model or "
                         "function")  # fmt: skip
    if scale not in SCALES:
        raise UsageError(f"--scale-rewards {scale}: expected group, batch or none")
    if sft_format not in SFT_FORMATS:
        raise UsageError(f"--sft-format {sft_format}: expected {', '.join(SFT_FORMATS)}")
    for spec in reward_func:
        parse_spec(spec)
    count = len(reward) + len(reward_func)
    parsed = None
    if weights is not None:
        try:
            parsed = [float(w) for w in weights.split(",")]
        except ValueError:
            raise UsageError(f"--reward-weights {weights}: expected numbers separated by commas") from None
        if len(parsed) != count:
            raise UsageError(f"--reward-weights gives {len(parsed)} weights for {count} rewards")
    if (keep or sft or pairs) and not count:
        raise UsageError("--keep, --sft and --pairs choose by reward: give --reward or --reward-func")
    if keep is not None and sft is None:
        raise UsageError("--keep chooses what --sft writes: give --sft FILE")
    if resume and job_output is None:
        raise UsageError("--resume continues an --output file: give --output FILE")
    return {"weights": parsed, "keep": parse_keep(keep or "best", n=n)}


def _plan_kwargs(decoding: DecodingFlags, set_: list[str] | None, model_args: ModelArgs, seed: int | None) -> tuple:
    """generate()'s keyword arguments (sampling unless a flag says otherwise) and the run's base seed."""
    from llmcli.genargs import build_generate_kwargs, checked_seed
    from llmcli.modelfs.tokenizer import generation_defaults
    from llmcli.plan import check_combinations

    decoding.extra = list(set_ or [])
    kwargs = build_generate_kwargs(decoding)
    kwargs.setdefault("do_sample", True)  # N completions of one prompt: drawn, unless --greedy says otherwise
    check_combinations(spec=model_args.spec(), kwargs=kwargs)
    source = model_args.source(verbose=False)
    base = checked_seed(generation_defaults(source.path) or {}, kwargs, seed)
    return kwargs, base if base is not None else 0


def _reward_model(model: str, model_args: ModelArgs) -> Any:
    from dataclasses import replace

    from llmcli.analysis.reward import load_reward_model

    return load_reward_model(model, replace(model_args.spec(prefill_only=True), adapter=None))


def _report_missing(groups: list[dict[str, Any]], names: list[str]) -> None:
    """Completions a reward left out (None or NaN): dropped from the statistics, as TRL drops them, and said."""
    from llmcli import output

    for name in names:
        missing = [(g["line"], c["index"]) for g in groups for c in g["completions"] if c["rewards"][name] is None]
        if missing:
            line, index = missing[0]
            output.warn(f"reward {name} gave no value (None or NaN) for {len(missing)} completion(s), the first "
                        f"completion {index} of line {line}: left out of the statistics")  # fmt: skip


def _present(groups: list[dict[str, Any]], model: dict[str, Any], rewards: Any, *, top: int, json_out: bool,
             **context: Any) -> None:  # fmt: skip
    from llmcli import output
    from llmcli.analysis.groups import run_metrics
    from llmcli.reports import sample as report

    zero = [g["zero_std"] for g in groups]
    summary = run_metrics(groups, rewards.names, zero_std=zero) if groups else {}
    named = [{"name": name, "weight": w} for name, w in zip(rewards.names, rewards.weights, strict=True)]
    scale, kwargs = context.pop("scale"), context.pop("kwargs")
    data = report.record(groups, summary, model=model, rewards=named, scale_rewards=scale, generate_kwargs=kwargs,
                         **context)  # fmt: skip
    output.present(report.build(data, shown=top), json=json_out)
