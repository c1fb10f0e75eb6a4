"""`llmcli replay`: a generate record run again (the same model, checked by its identity; the same prompt ids,
arguments and seed), its output tokens compared, and a divergence explained: both tokens' probabilities at
the first position that differs, the margin between them, and what differs in the environment.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from llmcli.errors import LlmcliError, UsageError

NEAR_TIE_NATS = 0.1  # |log P(new) − log P(recorded)| below this: the two tokens were nearly tied
# generate() arguments that shaped the record's extras (--logprobs), not its tokens
EXTRAS = ("output_logits", "return_dict_in_generate", "output_scores")


def check_record(record: Any, where: str) -> None:
    if not isinstance(record, dict):
        raise LlmcliError("a record must be a JSON object (a generate --json result)", path=where)
    missing = [k for k in ("prompt_token_ids", "generate_kwargs", "outputs", "model") if k not in record]
    if missing:
        raise LlmcliError(f"not a generate record: no {', '.join(missing)}", path=where)
    replay = record.get("replay") or {}
    if "engine" in replay:
        raise UsageError(f"{where}: this record came from {replay['engine']}; replay reruns records made here")
    outputs = record["outputs"]
    if not isinstance(outputs, list) or not outputs or not all(isinstance(o.get("token_ids"), list) for o in outputs):
        raise LlmcliError("the record's outputs carry no token ids", path=where)


def source_of(record: dict[str, Any]) -> Any:
    """The model the record names: its GGUF file when it came from one (the identity covers that hash too)."""
    from llmcli.modelfs.source import resolve_model

    model = record["model"]
    return resolve_model(model.get("gguf") or model.get("path"))


def check_identity(record: dict[str, Any], source: Any, adapter: Any) -> None:
    """The model found must be the one recorded: exit 1 naming each file that changed."""
    from llmcli.modelfs.identity import changed_files, comparable

    recorded = (record.get("replay") or {}).get("model")
    if not recorded:
        return
    changed = changed_files(recorded, comparable(recorded, source.path, gguf=source.gguf))
    if changed:
        raise LlmcliError(f"not the recorded model: {', '.join(changed)}", path=source.path)
    recorded_adapter = (record.get("replay") or {}).get("adapter")
    if recorded_adapter and adapter is not None:
        changed = changed_files(recorded_adapter, comparable(recorded_adapter, adapter))
        if changed:
            raise LlmcliError(f"not the recorded adapter: {', '.join(changed)}", path=adapter)


def load_spec(record: dict[str, Any], overrides: Any) -> Any:
    """The recorded settings, each unless the command line says otherwise."""
    from llmcli.plan import Attn, Dtype, LoadSpec, Quantize

    env = record.get("replay") or {}
    model = record["model"]
    attn = env.get("attn_implementation")
    spec = LoadSpec(
        dtype=Dtype(env.get("dtype") or model.get("dtype") or "auto"),
        quantize=Quantize(env.get("quantize") or "none"),
        group_size=(env.get("quantization") or {}).get("group_size")
        if env.get("quantize") in ("int4", "int8")
        else None,
        attn=Attn(attn) if attn in {a.value for a in Attn} else Attn.auto,
        device=(env.get("device") or {}).get("name") or model.get("device") or "auto",
        threads=env.get("threads"),
        prepack=bool(env.get("prepacked")),
        split_lone_rows=bool(env.get("split_lone_rows")),
    )
    changed = {k: v for k, v in overrides.items() if v not in (None, "auto", Dtype.auto, Attn.auto)}
    adapter = (env.get("adapter") or {}).get("path") or (model.get("adapter") or {}).get("path")
    if adapter:
        from pathlib import Path

        spec = replace(spec, adapter=Path(adapter), merge=bool((model.get("adapter") or {}).get("merged")))
    return replace(spec, **changed)


def rerun(loaded: Any, record: dict[str, Any]) -> list[list[int]]:
    """Each output's token ids, from the recorded prompt ids, arguments and seed."""
    from llmcli.engine.generate.generation import generate
    from llmcli.plan import GenerationPlan

    kwargs = {k: v for k, v in record["generate_kwargs"].items() if k not in EXTRAS}
    compiled = None
    if record.get("constraint"):
        from llmcli.engine.generate.constraints import compile_for, parse
        from llmcli.plan import Constraint

        constraint = Constraint(**record["constraint"])
        compiled = compile_for(loaded, constraint, parse(constraint), kwargs)
    plain = not (record.get("stats") or {}).get("compiled_step")  # decoded as the record was
    plan = GenerationPlan(kwargs=kwargs, seed=record.get("seed"), logprobs=None, constraint=compiled, plain_step=plain)
    ids = list(record["prompt_token_ids"])
    [result] = generate(loaded, [record.get("prompt") or ""], plan, encoded=[ids], raw=True)
    return [o.token_ids for o in result.outputs]


def _token_at(ids: list[int], at: int, logp: Any, decode: Any) -> dict[str, Any] | None:
    if at >= len(ids):
        return None  # this side had ended: the other went on
    return {"token_id": ids[at], "token": decode([ids[at]]), "prob": float(logp[ids[at]].exp())}


def divergence(loaded: Any, record: dict[str, Any], new: list[list[int]]) -> dict[str, Any] | None:
    """The first output and position where the tokens part, both tokens' probabilities there and the margin."""
    for index, (old_out, now) in enumerate(zip(record["outputs"], new, strict=False)):
        old = list(old_out["token_ids"])
        if old == now:
            continue
        at = next((i for i, (a, b) in enumerate(zip(old, now, strict=False)) if a != b), min(len(old), len(now)))
        import torch

        from llmcli.analysis.probe import last_logits

        logp = torch.log_softmax(last_logits(loaded.model, list(record["prompt_token_ids"]) + old[:at]), dim=-1)
        recorded = _token_at(old, at, logp, loaded.tokenizer.decode)
        fresh = _token_at(now, at, logp, loaded.tokenizer.decode)
        margin = None
        if recorded and fresh:
            margin = float(logp[fresh["token_id"]] - logp[recorded["token_id"]])
        return {"output_index": index, "first_divergence": at, "recorded_token": recorded, "new_token": fresh,
                "margin": margin, "near_tie": margin is not None and abs(margin) < NEAR_TIE_NATS}  # fmt: skip
    if len(new) != len(record["outputs"]):
        return {"output_index": min(len(new), len(record["outputs"])), "first_divergence": 0, "recorded_token": None,
                "new_token": None, "margin": None, "near_tie": False}  # fmt: skip
    return None


def replay_record(record: dict[str, Any], where: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The replay --json object for one record."""
    from llmcli.engine.load.environment import environment
    from llmcli.engine.load.loader import load
    from llmcli.reports.replay import environment_differences

    check_record(record, where)
    spec = load_spec(record, overrides)
    source = source_of(record)
    check_identity(record, source, spec.adapter)
    loaded = load(source, spec)
    new = rerun(loaded, record)
    found = divergence(loaded, record, new)
    now = environment(loaded, adapter=spec.adapter)
    data = {"record": where, "identical": found is None, "tokens": sum(len(o) for o in new),
            "output_index": None, "first_divergence": None, "recorded_token": None, "new_token": None,
            "margin": None, "near_tie": False}  # fmt: skip
    if found is not None:
        data |= found
    data["environment_differences"] = environment_differences(record.get("replay") or {}, now)
    return data
