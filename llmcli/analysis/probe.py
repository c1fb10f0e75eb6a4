"""Looking inside the model: the next-token distribution, per-token log-probabilities, perplexity.

The filters are transformers' own logits processors (the classes generate() builds for sampling), applied
in generate()'s order: temperature, top-k, top-p, min-p, typical-p.
"""

from __future__ import annotations

from typing import Any

from llmcli.flags import SAMPLING_KEYS


def sampling_processors(settings: dict[str, Any]) -> Any:
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        MinPLogitsWarper,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
        TypicalLogitsWarper,
    )

    procs = LogitsProcessorList()
    temperature = settings.get("temperature")
    if temperature is not None and temperature != 1.0 and temperature > 0:
        procs.append(TemperatureLogitsWarper(float(temperature)))
    if settings.get("top_k"):
        procs.append(TopKLogitsWarper(top_k=int(settings["top_k"])))
    if settings.get("top_p") is not None and settings["top_p"] < 1.0:
        procs.append(TopPLogitsWarper(top_p=float(settings["top_p"])))
    if settings.get("min_p") is not None and settings["min_p"] > 0:
        procs.append(MinPLogitsWarper(min_p=float(settings["min_p"])))
    if settings.get("typical_p") is not None and settings["typical_p"] < 1.0:
        procs.append(TypicalLogitsWarper(mass=float(settings["typical_p"])))
    return procs


def entropy_bits(probs: Any) -> float:
    import torch

    p = probs[probs > 0]
    return max(0.0, float(-(p * torch.log2(p)).sum()))


def last_logits(model: Any, prompt_ids: list[int]) -> Any:
    """The logits for the token after `prompt_ids` (float32), from one forward pass."""
    import torch

    from llmcli.engine.load.devices import input_device

    ids = torch.tensor([prompt_ids], device=input_device(model))
    with torch.inference_mode():
        return model(input_ids=ids).logits[0, -1].float()


def next_token(model: Any, tokenizer: Any, prompt_ids: list[int], settings: dict[str, Any], top: int) -> dict:
    """One forward pass: P at T=1, P after the user's filters, which tokens survive, entropy, cumulative mass."""
    import torch

    from llmcli.engine.load.devices import input_device

    logits = last_logits(model, prompt_ids)
    ids = torch.tensor([prompt_ids], device=input_device(model))
    base = torch.softmax(logits, dim=-1)
    greedy = settings.get("temperature") == 0
    processed = logits.unsqueeze(0) if greedy else sampling_processors(settings)(ids, logits.unsqueeze(0).clone())
    processed = processed[0]
    if greedy:  # T = 0 is the argmax: all the mass on one token
        after = torch.zeros_like(base)
        after[int(torch.argmax(logits))] = 1.0
    else:
        after = torch.softmax(processed, dim=-1)
    kept = after > 0 if greedy else torch.isfinite(processed)
    order = torch.argsort(base, descending=True)
    rows = []
    cumulative = 0.0
    for rank, index in enumerate(order[:top].tolist(), 1):
        p = float(base[index])
        cumulative += p
        rows.append(
            {
                "rank": rank,
                "token_id": index,
                "token": tokenizer.decode([index]),
                "logit": float(logits[index]),
                "prob": p,
                "cumulative": cumulative,
                "prob_after": float(after[index]),
                "kept": bool(kept[index]),
            }
        )
    return {
        "prompt_token_ids": prompt_ids,
        "settings": {k: settings.get(k) for k in SAMPLING_KEYS if settings.get(k) is not None},
        "vocab_size": int(logits.shape[-1]),
        "entropy_bits": entropy_bits(base),
        "entropy_bits_after": entropy_bits(after),
        "kept_tokens": int(kept.sum()),
        "candidates": rows,
    }


def score(model: Any, tokenizer: Any, ids: list[int]) -> dict[str, Any]:
    """Log-likelihood of every token given the ones before it, and perplexity = exp(mean NLL)."""
    import torch

    from llmcli.engine.load.devices import input_device
    from llmcli.scoring import check_scorable, score_data

    check_scorable(ids)
    tensor = torch.tensor([ids], device=input_device(model))
    with torch.inference_mode():
        logits = model(input_ids=tensor).logits[0].float()
    logp = torch.log_softmax(logits[:-1], dim=-1)
    token_logp = logp.gather(1, tensor[0, 1:].unsqueeze(1)).squeeze(1).tolist()
    logprobs = [None, *token_logp]
    return score_data(
        [{"token_id": i, "token": tokenizer.decode([i]), "logprob": lp} for i, lp in zip(ids, logprobs, strict=True)]
    )


def model_info(loaded: Any) -> dict[str, Any]:
    return {"path": str(loaded.source.path), "dtype": loaded.dtype, "device": loaded.device}


def next_token_record(
    loaded: Any, prompt: str, *, chat: bool, system: str | None, settings: dict[str, Any], top: int
) -> dict[str, Any]:
    """The next-token record: the prompt (raw, or through the chat template) and its candidates."""
    from llmcli.engine.generate.calls import one_pass_ids
    from llmcli.engine.load.environment import environment

    ids = one_pass_ids(loaded.tokenizer, prompt, chat=chat, system=system)

    found = next_token(loaded.model, loaded.tokenizer, ids, settings, top)
    return {"model": model_info(loaded), "prompt": prompt, **found, "replay": environment(loaded)}


def score_record(loaded: Any, text: str) -> dict[str, Any]:
    """The score record of a text as the tokenizer encodes it (special tokens included), within the context."""
    return score_ids_record(loaded, list(loaded.tokenizer(text, add_special_tokens=True)["input_ids"]))


def score_ids_record(loaded: Any, ids: list[int]) -> dict[str, Any]:
    """The score record of token ids as they are (serve's score by `token_ids`: dpo's reference over --server)."""
    from llmcli.engine.load.loader import vocab_size
    from llmcli.errors import LlmcliError
    from llmcli.modelfs.config import geometry

    context = geometry(loaded.config).context
    if context and len(ids) > context:
        raise LlmcliError(f"the text is {len(ids):,} tokens, but the model's context is {context:,} tokens")
    vocab = vocab_size(loaded.model)
    if vocab is not None and any(not 0 <= i < vocab for i in ids):
        raise LlmcliError(f"token_ids: an id outside the vocabulary of {vocab}")
    from llmcli.engine.load.environment import environment

    return {"model": model_info(loaded), **score(loaded.model, loaded.tokenizer, ids), "replay": environment(loaded)}
