"""serve's step scheduler: requests with different flags, seeds, lengths and stop strings share one forward
pass per step, each with the tokens of its solo run; late requests join a running batch; a row stopped
mid-batch leaves and the others go on; the batch is bounded by the KV memory; --batch-invariant.

The model loads in float32: batched and solo runs are two compute paths, token-identical only there."""

from __future__ import annotations

import threading

import pytest

from llmcli.engine.batch import kv_room
from llmcli.engine.batch.scheduler import Scheduler, SchedulerSettings, kv_bytes_per_token, wait_rows_done
from llmcli.engine.generate.generation import Finished, TextDelta, generate, stream_generate
from llmcli.engine.load.worker import engine_thread
from llmcli.plan import GenerationPlan

PROMPTS = ["the first prompt", "a second, longer prompt than the first", "three", "and a fourth one here"]


@pytest.fixture(scope="module")
def loaded(tiny_dir):
    return load_tiny(tiny_dir, "float32")


def load_tiny(tiny_dir, dtype):
    from llmcli.engine.load.loader import load
    from llmcli.modelfs.source import resolve_model
    from llmcli.plan import Dtype, LoadSpec

    return load(resolve_model(str(tiny_dir)), LoadSpec(dtype=Dtype(dtype)))


def plan(n: int = 12, seed: int | None = None, **flags) -> GenerationPlan:
    return GenerationPlan(kwargs={"do_sample": False, "max_new_tokens": n, **flags}, seed=seed, logprobs=None)


# Five requests a chat server gets at once: each its own sampler, seed, length and stop string.
MIXED = [
    plan(20),
    plan(16, seed=1, do_sample=True, temperature=0.7, top_p=0.95),
    plan(24, seed=2, do_sample=True, temperature=1.3, top_k=20, repetition_penalty=1.3, frequency_penalty=0.8),
    plan(9, seed=3, do_sample=True, min_p=0.05, min_new_tokens=9, presence_penalty=1.5, sequence_bias=[[[7], 4.0]]),
    plan(30, seed=4, do_sample=True, temperature=0.9, stop_strings=["e"]),
]


def queued(loaded, prompts, plans, scheduler, **options):
    """Streams created while the engine thread is busy, so that they wait together; then it is freed."""
    gate = threading.Event()
    engine_thread().submit(gate.wait)
    streams = [
        stream_generate(loaded, [p], pl, raw=True, scheduler=scheduler, **options)
        for p, pl in zip(prompts, plans, strict=True)
    ]
    return streams, gate


def drain(stream):
    texts, results = [], None
    for event in stream:
        if isinstance(event, TextDelta):
            texts.append(event.text)
        elif isinstance(event, Finished):
            results = event.results
    return "".join(texts), results


def solo(loaded, prompt, pl):
    return generate(loaded, [prompt], pl, raw=True)[0].outputs[0]


def test_mixed_flags_share_one_batch_and_keep_their_solo_tokens(loaded):
    prompts = [*PROMPTS, PROMPTS[0]]
    alone = [solo(loaded, p, pl) for p, pl in zip(prompts, MIXED, strict=True)]
    streams, gate = queued(loaded, prompts, MIXED, Scheduler(SchedulerSettings()), stream_text=True)
    gate.set()
    for stream, expected in zip(streams, alone, strict=True):
        text, [result] = drain(stream)
        out = result.outputs[0]
        assert result.stats.requests_in_batch == len(prompts)
        assert (out.token_ids, out.text, out.finish_reason) == (
            expected.token_ids,
            expected.text,
            expected.finish_reason,
        )
        assert text == out.text
    assert [r.finish_reason for r in alone][3:] == ["length", "stop_string"]  # min_new_tokens, the stop string


def test_a_request_that_arrives_mid_call_joins_at_the_next_step(loaded):
    scheduler = Scheduler(SchedulerSettings())
    long = plan(200, min_new_tokens=200)
    first = stream_generate(loaded, [PROMPTS[0]], long, raw=True, scheduler=scheduler, stream_text=True)
    iterator = iter(first)
    texts = [next(iterator).text]  # it decodes alone
    late = [
        stream_generate(loaded, [p], pl, raw=True, scheduler=scheduler)
        for p, pl in zip(PROMPTS[1:], MIXED[1:4], strict=True)
    ]
    for stream, pl, prompt in zip(late, MIXED[1:], PROMPTS[1:], strict=False):
        [result] = drain(stream)[1]
        assert result.stats.requests_in_batch >= 2  # it ran beside the first, which had not finished
        assert result.outputs[0].token_ids == solo(loaded, prompt, pl).token_ids
    for event in iterator:
        texts.append(event.text) if isinstance(event, TextDelta) else None
    [result] = first.results
    assert result.outputs[0].token_ids == solo(loaded, PROMPTS[0], long).token_ids
    assert "".join(texts) == result.outputs[0].text and result.stats.requests_in_batch == 4


def test_a_row_stopped_mid_batch_leaves_and_the_others_go_on(loaded):
    scheduler = Scheduler(SchedulerSettings())
    plans = [plan(40, seed=i, do_sample=True, min_new_tokens=40) for i in range(4)]
    streams, gate = queued(loaded, PROMPTS, plans, scheduler, stream_text=True)
    assert streams[3].stop() == [] and streams[3] not in scheduler.waiting  # withdrawn before it ran
    gate.set()
    iterator = iter(streams[0])
    assert isinstance(next(iterator), TextDelta)  # the batch (rows 0-2) is decoding
    [stopped] = streams[0].stop()
    assert stopped.interrupted and len(stopped.outputs[0].token_ids) < 40
    for stream, prompt, pl in zip(streams[1:3], PROMPTS[1:3], plans[1:3], strict=True):
        _, [result] = drain(stream)
        assert not result.interrupted and result.outputs[0].token_ids == solo(loaded, prompt, pl).token_ids
    assert wait_rows_done(scheduler) and scheduler.rows() == 0


def test_the_batch_is_bounded_by_the_kv_memory_and_the_rest_wait_their_turn(loaded):
    longest = len(loaded.tokenizer(PROMPTS[1])["input_ids"]) + 40 + kv_room.ROOM  # prompt, tokens, spare room
    per_row = longest * kv_bytes_per_token(loaded)
    scheduler = Scheduler(SchedulerSettings(kv_budget_bytes=2 * per_row))
    streams, gate = queued(loaded, PROMPTS, [plan(40)] * 4, scheduler)
    gate.set()
    results = [drain(s)[1][0] for s in streams]
    assert max(r.stats.requests_in_batch for r in results) == 2
    for result, prompt in zip(results, PROMPTS, strict=True):
        assert result.outputs[0].token_ids == solo(loaded, prompt, plan(40)).token_ids


def test_grammars_and_penalties_are_row_processors_that_share_the_batch(loaded):
    """Structured output (a tool call under tool_choice, response_format) decodes as a row beside the others,
    each row with its own fresh matcher, and every row keeps the tokens of its solo run through generate()."""
    import json
    from dataclasses import replace

    from llmcli.engine.generate.constraints import compile_for, parse
    from llmcli.plan import Constraint

    schema = {"type": "object", "properties": {"name": {"const": "add"}, "arguments": {"type": "object"}}}
    constraint = Constraint("json_schema", json.dumps(schema))
    compiled = compile_for(loaded, constraint, parse(constraint), {})
    plans = [
        replace(plan(24), constraint=compiled),
        plan(16, presence_penalty=1.0, frequency_penalty=0.5),
        replace(plan(24, seed=5, do_sample=True, temperature=0.8), constraint=compiled),
        plan(10, seed=6, do_sample=True, sequence_bias=[[[3], -100.0]]),
    ]
    alone = [solo(loaded, p, pl) for p, pl in zip(PROMPTS, plans, strict=True)]
    streams, gate = queued(loaded, PROMPTS, plans, Scheduler(SchedulerSettings()), stream_text=True)
    gate.set()
    for stream, expected, pl in zip(streams, alone, plans, strict=True):
        text, [result] = drain(stream)
        out = result.outputs[0]
        assert out.token_ids == expected.token_ids and text == out.text
        assert result.stats.requests_in_batch == len(PROMPTS)
        if pl.constraint is not None:
            assert out.text.startswith("{") and out.valid == expected.valid


def test_requests_that_cannot_share_a_pass_run_apart_between_steps(loaded):
    """Log-probabilities, beams and n > 1 run through generate() while a batch decodes, and the batch goes on."""
    scheduler = Scheduler(SchedulerSettings())
    rows = [stream_generate(loaded, [p], plan(60, min_new_tokens=60), raw=True, scheduler=scheduler) for p in PROMPTS]
    apart = [
        GenerationPlan(kwargs={"do_sample": False, "max_new_tokens": 5}, seed=None, logprobs=2),
        plan(5, num_beams=2),
        plan(5, seed=5, do_sample=True, num_return_sequences=2),
    ]
    for pl in apart:
        [result] = generate(loaded, [PROMPTS[0]], pl, raw=True, scheduler=scheduler)
        assert result.stats.requests_in_batch == 1 and result.stats.batch_rows_mean is None
    assert all(len(drain(s)[1][0].outputs[0].token_ids) == 60 for s in rows)


def test_batch_invariant_in_bfloat16_runs_one_request_at_a_time(tiny_dir):
    bf16 = load_tiny(tiny_dir, "bfloat16")
    plans = MIXED[:3]
    for invariant, most in ((True, 1), (False, 3)):
        scheduler = Scheduler(SchedulerSettings(invariant=invariant))
        streams, gate = queued(bf16, PROMPTS[:3], plans, scheduler)
        gate.set()
        results = [drain(s)[1][0] for s in streams]
        assert max(r.stats.requests_in_batch for r in results) == most
        if invariant:  # one at a time is the solo run itself
            for result, prompt, pl in zip(results, PROMPTS, plans, strict=False):
                assert result.outputs[0].token_ids == solo(bf16, prompt, pl).token_ids


def test_an_error_outside_a_step_ends_the_rows_with_it_and_the_next_request_is_served(loaded, monkeypatch):
    scheduler = Scheduler(SchedulerSettings())
    original = Scheduler._room

    def broken(self, batch, calls):
        raise RuntimeError("the budget could not be read")

    monkeypatch.setattr(Scheduler, "_room", broken)
    stream = stream_generate(loaded, [PROMPTS[0]], plan(5), raw=True, scheduler=scheduler)
    with pytest.raises(RuntimeError, match="budget"):
        drain(stream)
    monkeypatch.setattr(Scheduler, "_room", original)
    [result] = generate(loaded, [PROMPTS[0]], plan(5), raw=True, scheduler=scheduler)
    assert result.outputs[0].token_ids == solo(loaded, PROMPTS[0], plan(5)).token_ids


def test_the_rows_of_a_batch_choose_on_the_engine_thread(loaded, monkeypatch):
    """No thread of the batch's own runs torch: each kept an OpenMP team in the engine's way (stepper.choose_all)."""
    from llmcli.engine.batch.rows import Row

    threads = set()
    real = Row.choose
    monkeypatch.setattr(Row, "choose", lambda row, logits: threads.add(threading.current_thread()) or real(row, logits))
    streams, gate = queued(loaded, PROMPTS[:3], MIXED[:3], Scheduler(SchedulerSettings()))
    gate.set()
    assert all(drain(s)[1][0].outputs[0].token_ids for s in streams)
    assert threads == {engine_thread().submit(threading.current_thread).result()}


def test_a_bfloat16_batch_keeps_its_cache_in_float32_and_computes_what_it_did(tiny_dir, monkeypatch):
    """Where a decoding step's attention upcasts (engine.load.cpu_attention), the batch's cache is kept in
    float32 instead of copied up in every layer of every step, and a step's logits are what they were. One step
    is compared, not tokens: bfloat16 tokens of two compute paths may part at a near-tie on another CPU."""
    import torch

    from llmcli.engine.batch import stepper

    loaded = load_tiny(tiny_dir, "bfloat16")
    dtypes = []
    forward = stepper.Batch._last_logits

    def recording_forward(self, ids, mask, positions, cache):
        dtypes.extend([cache.layers[0].keys.dtype] if ids.shape[1] == 1 else [])  # a step, not a prefill
        return forward(self, ids, mask, positions, cache)

    monkeypatch.setattr(stepper.Batch, "_last_logits", recording_forward)
    logits = recorded_logits(monkeypatch)

    def step_logits(prompts=PROMPTS[:3]):
        dtypes.clear()
        logits.clear()
        two = plan(2, min_new_tokens=2)  # the prefill chooses the first token (the same path), one step the second
        settings = SchedulerSettings(plain_step=True)
        streams, gate = queued(loaded, prompts, [two] * len(prompts), Scheduler(settings))
        gate.set()
        for stream in streams:
            drain(stream)
        return torch.stack([steps[-1] for steps in logits.values()])  # each row's step (its prefill's first)

    wide = step_logits()
    assert dtypes == [torch.float32]
    alone = torch.cat([step_logits(prompts=[p]) for p in PROMPTS[:3]])  # no padding: each row's own figures
    assert torch.allclose(wide, alone, atol=0.05, rtol=0.05)  # the padded rows masked (bfloat16 rounding apart)
    monkeypatch.setattr(stepper, "wide_cache_dtype", lambda model: None)
    narrow = step_logits()
    assert dtypes == [torch.bfloat16] and wide.shape[0] == 3
    assert torch.allclose(wide, narrow, atol=1e-5, rtol=1e-5)


def recorded_logits(monkeypatch) -> dict[tuple[int, ...], list]:
    """Every row's logits at each of its steps, by its prompt, as the batch hands them to the rows' choice."""
    from llmcli.engine.batch import stepper

    seen: dict[tuple[int, ...], list] = {}
    choose = stepper.choose_all

    def recording(rows, logits):
        for i, row in enumerate(rows):
            seen.setdefault(tuple(row.prompt), []).append(logits[i].clone())
        return choose(rows, logits)

    monkeypatch.setattr(stepper, "choose_all", recording)
    return seen
