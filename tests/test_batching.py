"""The server's batcher: greedy calls that wait together share one generate() call, each output identical to
its solo run; a call stopped in the queue or in the middle of a batch leaves at once and the others go on.

The model loads in float32: batched and solo runs are two compute paths, token-identical only there."""

from __future__ import annotations

import threading

import pytest

from llmcli.engine.batching import Batcher
from llmcli.engine.generation import Finished, TextDelta, engine_thread, generate, stream_generate
from llmcli.plan import GenerationPlan

PROMPTS = ["the first prompt", "a second, longer prompt than the first", "three", "and a fourth one here"]


@pytest.fixture(scope="module")
def loaded(tiny_dir):
    from llmcli.engine.loader import load
    from llmcli.modelfs.source import resolve_model
    from llmcli.plan import Dtype, LoadSpec

    return load(resolve_model(str(tiny_dir)), LoadSpec(dtype=Dtype.float32))


def greedy(n: int = 12, **more) -> GenerationPlan:
    return GenerationPlan(kwargs={"do_sample": False, "max_new_tokens": n, **more}, seed=None, logprobs=None)


def queued(loaded, prompts, plan, batcher, **options):
    """Streams created while the engine thread is busy, so that they wait together; then it is freed."""
    gate = threading.Event()
    engine_thread().submit(gate.wait)
    streams = [stream_generate(loaded, [p], plan, raw=True, batcher=batcher, **options) for p in prompts]
    return streams, gate


def drain(stream):
    texts, results = [], None
    for event in stream:
        if isinstance(event, TextDelta):
            texts.append(event.text)
        elif isinstance(event, Finished):
            results = event.results
    return "".join(texts), results


def test_waiting_greedy_calls_share_a_batch_and_keep_their_solo_tokens(loaded):
    solo = [generate(loaded, [p], greedy(), raw=True)[0] for p in PROMPTS]
    streams, gate = queued(loaded, PROMPTS, greedy(), Batcher(max_batch=8), stream_text=True)
    gate.set()
    for stream, alone in zip(streams, solo, strict=True):
        text, [result] = drain(stream)
        assert result.stats.requests_in_batch == len(PROMPTS)
        assert result.outputs[0].token_ids == alone.outputs[0].token_ids
        assert text == result.outputs[0].text == alone.outputs[0].text
        assert result.prompt_token_ids == alone.prompt_token_ids


def test_the_batch_is_bounded_and_different_flags_run_apart(loaded):
    batcher = Batcher(max_batch=2)
    streams, gate = queued(loaded, PROMPTS[:3], greedy(), batcher)
    other, _ = queued(loaded, PROMPTS[3:], greedy(n=5), batcher)
    gate.set()
    _.set()
    sizes = [drain(s)[1][0].stats.requests_in_batch for s in [*streams, *other]]
    assert sizes == [2, 2, 1, 1]


def test_seeded_sampling_never_joins_a_batch(loaded):
    plan = GenerationPlan(kwargs={"do_sample": True, "max_new_tokens": 6}, seed=3, logprobs=None)
    alone = generate(loaded, [PROMPTS[0]], plan, raw=True)[0]
    streams, gate = queued(loaded, PROMPTS[:2], plan, Batcher(max_batch=8))
    gate.set()
    first, second = (drain(s)[1][0] for s in streams)
    assert first.stats.requests_in_batch == second.stats.requests_in_batch == 1
    assert first.outputs[0].token_ids == alone.outputs[0].token_ids


def test_a_call_stopped_in_the_queue_or_in_a_batch_leaves_at_once(loaded):
    batcher = Batcher(max_batch=8)
    streams, gate = queued(loaded, PROMPTS, greedy(n=40), batcher, stream_text=True)
    assert streams[3].stop() == [] and streams[3] not in batcher.waiting  # withdrawn before it ran
    gate.set()
    iterator = iter(streams[0])
    assert isinstance(next(iterator), TextDelta)  # the batch (rows 0-2) is decoding
    assert streams[0].stop() == []  # its row ends; the others are not waited for, nor stopped
    for stream in streams[1:3]:
        _, [result] = drain(stream)
        assert result.stats.requests_in_batch == 3 and not result.interrupted
        [alone] = generate(loaded, [result.prompt], greedy(n=40), raw=True)
        assert result.outputs[0].token_ids == alone.outputs[0].token_ids


def test_a_lone_call_restarts_with_requests_that_arrive_while_it_is_young(loaded):
    """Greedy float32: the merged rerun repeats the lone call's tokens, so its streamed text is not repeated."""
    plan = greedy(n=150)
    solo = [generate(loaded, [p], plan, raw=True)[0] for p in PROMPTS[:3]]
    batcher = Batcher(max_batch=8, restart_seconds=30)
    first = stream_generate(loaded, [PROMPTS[0]], plan, raw=True, batcher=batcher, stream_text=True)
    iterator = iter(first)
    texts = [next(iterator).text]  # it decodes alone
    others = [stream_generate(loaded, [p], plan, raw=True, batcher=batcher) for p in PROMPTS[1:3]]
    for event in iterator:
        if isinstance(event, TextDelta):
            texts.append(event.text)
        else:
            [result] = event.results
    assert result.stats.requests_in_batch == 3 and "".join(texts) == result.outputs[0].text
    assert result.outputs[0].token_ids == solo[0].outputs[0].token_ids
    for stream, alone in zip(others, solo[1:], strict=True):
        [answer] = drain(stream)[1]
        assert answer.outputs[0].token_ids == alone.outputs[0].token_ids and answer.stats.requests_in_batch == 3
