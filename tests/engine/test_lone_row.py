"""serve's lone row through the kept compiled step (engine.step.lone): a row alone in its batch decodes through
the library generate() uses, the rows that join it later take the model's forward over the same cache, and
every row keeps the tokens of its solo run (float32, a library that holds the weights beside oneDNN's and one
bound to torch's own); --no-compile and --batch-invariant keep lone rows on the forward."""

from __future__ import annotations

import pytest

from llmcli.engine.batch import kv_room
from llmcli.engine.batch.scheduler import Scheduler, SchedulerSettings
from llmcli.engine.generate.generation import generate, stream_generate
from llmcli.plan import GenerationPlan
from tests.engine.test_batching import MIXED, PROMPTS, drain, recorded_logits
from tests.engine.test_compiled_step import GREEDY, holding_weights
from tests.engine.test_compiled_step import generate as generate_cli

LONG = GenerationPlan(kwargs={"do_sample": False, "max_new_tokens": 40, "min_new_tokens": 40}, seed=None)


def loaded_with(tiny_dir, *, prepack: bool, dtype: str = "float32", quantize: str = "none"):
    from llmcli.engine.load.loader import load
    from llmcli.modelfs.source import resolve_model
    from llmcli.plan import Dtype, LoadSpec, Quantize

    spec = LoadSpec(dtype=Dtype(dtype), prepack=prepack, quantize=Quantize(quantize))
    return load(resolve_model(str(tiny_dir)), spec)


def solo(loaded, prompt, plan):
    """The prompt's tokens through generate() on the plain step."""
    from dataclasses import replace

    return generate(loaded, [prompt], replace(plan, plain_step=True), raw=True)[0].outputs[0].token_ids


def alone_then_joined(loaded, settings: SchedulerSettings, second: GenerationPlan = MIXED[1]) -> list:
    """A long request that decodes alone, joined mid-way by a second, which leaves before it: their results."""
    scheduler = Scheduler(settings)
    first = stream_generate(loaded, [PROMPTS[0]], LONG, raw=True, scheduler=scheduler, stream_text=True)
    iterator = iter(first)
    next(iterator)
    [joined] = drain(stream_generate(loaded, [PROMPTS[1]], second, raw=True, scheduler=scheduler))[1]
    for _ in iterator:
        pass
    return [*first.results, joined]


@pytest.mark.parametrize(("kind", "weights"), [("llama", "held"), ("llama", "bound"), ("qwen2", "bound")])
def test_a_lone_row_steps_through_the_library_and_others_join_it(kind, weights, tiny_dir, tiny_qwen2, step_home,
                                                                 capsys, monkeypatch):  # fmt: skip
    """qwen2: a model with `layer_types`, whose library takes a dict of masks (one full-attention kind)."""
    import torch

    if weights == "held":
        holding_weights(monkeypatch)
    model = tiny_dir if kind == "llama" else tiny_qwen2
    generate_cli(model, [*GREEDY, "--compile"], capsys, monkeypatch, step_home)  # kept already, or built now
    monkeypatch.setattr(kv_room, "ROOM", 3)  # the room is taken afresh every few steps, alone and in a batch
    monkeypatch.setattr(kv_room, "LONE_ROOM", 2)
    loaded = loaded_with(model, prepack=weights == "held")
    assert loaded.prepacked == (weights == "held")
    logits = recorded_logits(monkeypatch)
    plain = alone_then_joined(loaded, SchedulerSettings(plain_step=True))
    on_forward, logits_forward = [r.stats.compiled_step for r in plain], dict(logits)
    logits.clear()
    alone, joined = alone_then_joined(loaded, SchedulerSettings())
    assert on_forward == [None, None] and (alone.stats.compiled_step, alone.stats.requests_in_batch) == ("loaded", 2)
    for prompt, steps in logits.items():  # each row's logits at every step, alone or beside the other
        assert torch.allclose(torch.stack(steps), torch.stack(logits_forward[prompt]), atol=1e-4, rtol=1e-4)
    assert alone.outputs[0].token_ids == solo(loaded, PROMPTS[0], LONG) == plain[0].outputs[0].token_ids
    assert joined.outputs[0].token_ids == solo(loaded, PROMPTS[1], MIXED[1])


@pytest.mark.parametrize("settings", [SchedulerSettings(plain_step=True), SchedulerSettings(invariant=True)])
def test_no_compile_and_batch_invariant_keep_lone_rows_on_the_forward(settings, tiny_dir, step_home, capsys,
                                                                      monkeypatch):  # fmt: skip
    generate_cli(tiny_dir, [*GREEDY, "--compile"], capsys, monkeypatch, step_home)
    loaded = loaded_with(tiny_dir, prepack=False)
    [result] = drain(stream_generate(loaded, [PROMPTS[2]], LONG, raw=True, scheduler=Scheduler(settings)))[1]
    assert result.stats.compiled_step is None
    assert result.outputs[0].token_ids == solo(loaded, PROMPTS[2], LONG)
    [result] = drain(stream_generate(loaded, [PROMPTS[2]], LONG, raw=True, scheduler=Scheduler(SchedulerSettings())))[1]
    assert result.stats.compiled_step == "loaded"  # the same load, without either: the library


def test_bfloat16_alone_on_the_library_float32_in_a_batch(tiny_dir, step_home, capsys, monkeypatch):
    """A bfloat16 lone row gives the library a bfloat16 cache; once another row joins, the batch's cache is
    float32 (engine.batch.stepper.wide_cache_dtype); alone again, bfloat16 again."""
    import torch

    from llmcli.engine.batch import stepper
    from tests.helpers import run_cli

    monkeypatch.setenv("LLMCLI_HOME", str(step_home))
    args = ["generate", "-m", str(tiny_dir), "--dtype", "bfloat16", "hi", "--greedy", "-n", "4", "--compile"]
    assert run_cli(args, capsys, monkeypatch).code == 0
    loaded = loaded_with(tiny_dir, prepack=True, dtype="bfloat16")
    seen = []
    step = stepper.Batch.step

    def recording(self):
        rows = len(self.rows)
        done = step(self)
        seen.append((rows, self.cache.layers[0].keys.dtype if self.rows else None))
        return done

    monkeypatch.setattr(stepper.Batch, "step", recording)
    # lengths fixed by min_new_tokens: bfloat16 tokens may differ between CPUs, and none is compared here
    short = GenerationPlan(kwargs={"do_sample": False, "max_new_tokens": 16, "min_new_tokens": 16}, seed=None)
    alone, joined = alone_then_joined(loaded, SchedulerSettings(), short)
    assert alone.stats.compiled_step == "loaded" and len(alone.outputs[0].token_ids) == 40
    assert len(joined.outputs[0].token_ids) == 16
    kinds = {(rows, dtype) for rows, dtype in seen if dtype is not None}
    assert kinds == {(1, torch.bfloat16), (2, torch.float32)}
    assert [rows for rows, _ in seen][-1] == 1  # the first finished alone again


@pytest.mark.parametrize("quantize", ["none", "int4"])
def test_rows_step_through_the_library_for_rows(quantize, tiny_dir, step_home, monkeypatch):
    """`serve --compile`'s library for rows (traced with a dynamic row count): three rows of different prompts
    and flags decode eagerly while they exceed LIBRARY_ROWS (2 here), through the library once one has left (the
    third alone again, without a one-row library here: eagerly), each with its solo tokens (float32; the
    library holds the weights beside oneDNN's, as a bfloat16 one's does; an int4 model's binds its layers, whose
    kernel takes the library's whole range of rows)."""
    from llmcli.engine.batch import stepper
    from llmcli.engine.step.lone import rows_step
    from llmcli.engine.step.store import listed
    from llmcli.server.compiled_step import build_rows_step
    from tests.engine.test_batching import queued

    if quantize == "none":
        holding_weights(monkeypatch)
    monkeypatch.setenv("LLMCLI_HOME", str(step_home))
    monkeypatch.setattr(stepper, "LIBRARY_ROWS", 2)
    monkeypatch.setattr(kv_room, "ROOM", 3)  # rooms taken afresh every few steps
    loaded = loaded_with(tiny_dir, prepack=quantize == "none", quantize=quantize)
    build_rows_step(loaded)
    again = loaded_with(tiny_dir, prepack=quantize == "none", quantize=quantize)
    assert rows_step(loaded) is not None and rows_step(again) is not None  # kept
    named = {(s["model"], s["scheme"]) for s in listed() if s["rows"] == "many"}
    assert (str(tiny_dir), None if quantize == "none" else "int4 g32") in named  # as `llmcli models` lists it
    rows = []
    step = stepper.Batch.step

    def recording(self):
        rows.append((len(self.rows), self.many is not None))
        return step(self)

    monkeypatch.setattr(stepper.Batch, "step", recording)
    plans = [LONG, MIXED[1], MIXED[0]]  # 40, 16 and 20 tokens
    streams, gate = queued(loaded, PROMPTS[:3], plans, Scheduler(SchedulerSettings()))
    gate.set()
    results = [drain(s)[1][0] for s in streams]
    assert [r.stats.compiled_step for r in results] == ["loaded", None, "loaded"]
    assert {n for n, _ in rows} == {1, 2, 3} and all(many for _, many in rows)
    for prompt, plan, result in zip(PROMPTS[:3], plans, results, strict=True):
        assert result.outputs[0].token_ids == solo(loaded, prompt, plan)
