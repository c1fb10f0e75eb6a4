"""engine.generate.min_length: transformers' minimum-length processors, their end-of-text mask made once, give
what the originals give, before and after the minimum, and serve's rows carry them."""

from __future__ import annotations

import copy

import pytest


@pytest.mark.parametrize("kind", ["min_new_tokens", "min_length"])
def test_the_kept_mask_processors_compute_what_transformers_computes(kind, monkeypatch):
    import torch
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        MinLengthLogitsProcessor,
        MinNewTokensLengthLogitsProcessor,
    )

    from llmcli.engine.generate.min_length import with_kept_masks

    if kind == "min_new_tokens":
        original = MinNewTokensLengthLogitsProcessor(prompt_length_to_skip=3, min_new_tokens=4, eos_token_id=[2, 7])
    else:
        original = MinLengthLogitsProcessor(min_length=7, eos_token_id=[2, 7])
    [kept] = with_kept_masks(LogitsProcessorList([copy.deepcopy(original)]))
    assert type(kept) is not type(original) and isinstance(kept, type(original))
    masks = []
    isin = torch.isin
    monkeypatch.setattr(torch, "isin", lambda *a, **k: masks.append(1) or isin(*a, **k))
    scores = torch.randn(1, 50, generator=torch.Generator().manual_seed(0))
    for length in range(3, 10):  # below the minimum, then past it
        ids = torch.arange(length).unsqueeze(0)
        theirs, ours = original(ids, scores), kept(ids, scores)
        assert torch.equal(ours, theirs) and ours.data_ptr() != scores.data_ptr()
        assert torch.isinf(ours[0, [2, 7]]).all() == (length < 7)
    assert len(masks) == 7 + 1  # the original's mask each call, the kept one's once


def test_a_serve_row_with_min_new_tokens_carries_the_kept_mask(tiny_dir):
    from llmcli.engine.batch.rows import Row
    from llmcli.engine.generate.calls import prepare
    from llmcli.engine.load.loader import load
    from llmcli.modelfs.source import resolve_model
    from llmcli.plan import Dtype, GenerationPlan, LoadSpec

    loaded = load(resolve_model(str(tiny_dir)), LoadSpec(dtype=Dtype("float32")))
    plan = GenerationPlan(kwargs={"do_sample": False, "max_new_tokens": 5, "min_new_tokens": 5}, seed=None)
    call = prepare(loaded, ["hi"], [loaded.tokenizer("hi")["input_ids"]], plan)
    row = Row(call, device="cpu")
    assert "MinNewTokens" in [type(p).__name__ for p in row.processors]
