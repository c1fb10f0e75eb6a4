"""After generate() returns: sequences become `Result`s (text, finish reason, log-probabilities) and the
timer's marks become `Stats`."""

from __future__ import annotations

from typing import Any

from llmcli.engine.generate.records import Output, Result, Stats
from llmcli.engine.generate.streaming import TokenTimer, first_stop


def finish_reason(
    new_ids: list[int], eos_ids: set[int], text_before_cut: str, stops: list[str], max_new: int | None
) -> str:
    if new_ids and new_ids[-1] in eos_ids:
        return "stop"
    if stops and first_stop(text_before_cut, stops) is not None:
        return "stop_string"
    if stops and max_new is not None and len(new_ids) < max_new:
        # transformers matches stop strings across the prompt's tail too, so the text alone may not show it.
        return "stop_string"
    return "length"


def eos_set(model: Any, kwargs: dict[str, Any]) -> set[int]:
    eos = kwargs.get("eos_token_id", getattr(model.generation_config, "eos_token_id", None))
    if eos is None:
        return set()
    return set(eos) if isinstance(eos, (list, tuple)) else {int(eos)}


def trim_after_eos(ids: list[int], eos: set[int]) -> list[int]:
    for i, tok in enumerate(ids):
        if tok in eos:
            return ids[: i + 1]
    return ids


def output_of(call: Any, row: int, sequence: list[int], step_logits: Any, *, interrupted: bool) -> Output:
    """One generated sequence: its new tokens (pads and what follows EOS dropped), text and finish reason."""
    tokenizer = call.tokenizer
    new_ids = trim_after_eos(sequence[call.width :], call.eos)
    while new_ids and new_ids[-1] == call.pad_id and call.pad_id not in call.eos:
        new_ids.pop()
    full_text = tokenizer.decode(new_ids, skip_special_tokens=True)
    cut = first_stop(full_text, call.stops)
    text = full_text if cut is None else full_text[:cut]
    max_new = call.kwargs.get("max_new_tokens")
    reason = "length" if interrupted else finish_reason(new_ids, call.eos, full_text, call.stops, max_new)
    logprobs = None
    if call.logprobs is not None and not interrupted:
        logprobs = [step_logprobs(step_logits[t][row], tok, call.logprobs, tokenizer) for t, tok in enumerate(new_ids)]
    valid = call.constraint.valid(text, new_ids) if call.constraint is not None else None
    return Output(text, new_ids, reason, logprobs, valid)


def step_logprobs(step_logits: Any, chosen: int, top: int, tokenizer: Any) -> dict[str, Any]:
    """One decoding step's log-probability of the chosen token and the `top` most likely ones (--logprobs)."""
    import torch

    logp = torch.log_softmax(step_logits.float(), dim=-1)
    values, indexes = torch.topk(logp, top) if top > 0 else (torch.tensor([]), torch.tensor([], dtype=torch.long))
    return {
        "token_id": chosen,
        "token": tokenizer.decode([chosen]),
        "logprob": float(logp[chosen]),
        "top": [
            {"token_id": int(i), "token": tokenizer.decode([int(i)]), "logprob": float(v)}
            for v, i in zip(values.tolist(), indexes.tolist(), strict=True)
        ],
    }


def results_of(call: Any, sequences: list[list[int]], step_logits: Any, *, interrupted: bool) -> list[Result]:
    per_prompt = len(sequences) // len(call.prompts)
    results = []
    for index, prompt in enumerate(call.prompts):
        rows = range(index * per_prompt, (index + 1) * per_prompt)
        outputs = [output_of(call, r, sequences[r], step_logits, interrupted=interrupted) for r in rows]
        constraint = call.constraint.constraint.describe() if call.constraint is not None else None
        result = Result(prompt, call.encoded[index], outputs, Stats(), jsonable(call.kwargs), call.seed, interrupted)
        result.constraint = constraint
        result.batch_size, result.batch_position = len(call.prompts), index
        results.append(result)
    return results


def stats_of(call: Any, results: list[Result], timer: TokenTimer | None, started: float, ended: float) -> Stats:
    """`timer`: generate()'s TokenTimer, or a serve row's engine.batch.rows.RowStats, which keeps the same marks."""
    stats = Stats(
        load_seconds=round(call.loaded.load_seconds, 3),
        prompt_tokens=sum(len(i) for i in call.encoded),
        generated_tokens=sum(len(o.token_ids) for r in results for o in r.outputs),
        total_seconds=round(ended - started, 4),
    )
    if timer is not None and timer.first_token_at is not None:
        ttft = timer.first_token_at - started
        stats.time_to_first_token = round(ttft, 4)
        stats.prefill_tokens_per_second = round(stats.prompt_tokens / ttft, 2) if ttft > 0 else None
        steps = timer.count - 1
        # On a GPU the last put() is queued ahead of its kernels; the ids' copy to the host waited for them.
        last = ended if call.on_gpu else timer.last_token_at
        if steps > 0 and last and last > timer.first_token_at:
            rows = len(call.encoded) * call.kwargs.get("num_return_sequences", 1)
            stats.decode_tokens_per_second = round(steps * rows / (last - timer.first_token_at), 2)
    stats.peak_memory_bytes, stats.peak_memory_kind = peak_memory(call.loaded.device)
    return stats


def peak_memory(device: str) -> tuple[int | None, str]:
    import torch

    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "rss"
    except (ImportError, OSError):
        return None, "rss"


def jsonable(kwargs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in kwargs.items():
        if isinstance(v, (str, int, float, bool, type(None), list, dict)):
            out[k] = v
        else:
            out[k] = repr(v)
    return out
