"""`serve --compile` on the CPU: the compiled decoding steps built (or found kept) once at start, so that a row
alone in its batch decodes through the one-row step and more rows through one traced with a dynamic row count
(engine.step.lone) while requests keep batching. The flag used to put every request on generate()'s static
cache, one request at a time. On a GPU it keeps that path (torch.compile inside generate()). May import the
engine and the shared top-level modules.
"""

from __future__ import annotations

from typing import Any


def prepare(loaded: Any) -> str | None:
    """Builds or loads the model's compiled step with one short generate() call (its build says so on stderr);
    returns a warning where lone rows still cannot use it, else None."""
    from llmcli.engine.generate.generation import generate
    from llmcli.engine.step.lone import lone_step
    from llmcli.genargs import DecodingFlags, build_generate_kwargs
    from llmcli.plan import GenerationPlan

    kwargs = {**build_generate_kwargs(DecodingFlags(compile=True)), "do_sample": False, "max_new_tokens": 2}
    generate(loaded, ["Hello"], GenerationPlan(kwargs=kwargs), raw=True)
    if lone_step(loaded) is not None:
        build_rows_step(loaded)
        return None
    why = "it binds the weights, which this load reordered for oneDNN (--no-prepack keeps them)"
    return f"--compile: lone rows decode on the model's forward: {why if loaded.prepacked else 'no step was built'}"


def build_rows_step(loaded: Any) -> None:
    """Builds (or finds kept) the library for rows with one short generate() call of two left-padded
    prompts through a static cache (its build says so on stderr, as the one-row step's)."""
    import torch

    from llmcli.engine.generate.attention import attention_for_call
    from llmcli.engine.step.compiled import installed, rows_step_for
    from llmcli.genargs import DecodingFlags, build_generate_kwargs, for_generate

    step = rows_step_for(loaded, building=True)
    step.may_build, step.failed = True, None
    kwargs = for_generate({**build_generate_kwargs(DecodingFlags(compile=True)), "do_sample": False,
                           "max_new_tokens": 3, "min_new_tokens": 3})  # fmt: skip
    ids = torch.tensor([[0, 5, 6], [7, 8, 9]], device=loaded.model.device)  # ids any vocabulary has
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]], device=loaded.model.device)
    with (
        torch.inference_mode(),
        attention_for_call(loaded, 3, True),
        installed(loaded.model, step, kwargs["compile_config"]),
    ):
        loaded.model.generate(input_ids=ids, attention_mask=mask, pad_token_id=0, **kwargs)
    step.may_build = False


def offer(loaded: Any) -> str | None:
    """The offer of `serve --compile`, made once on stderr to a person at a terminal (engine.step.offer's memo):
    a server started without the flag on the CPU, for a model whose libraries measured faster than its forward
    (engine.step.variant.pays), where the one-row library or the one for rows is not kept (serve never compiles
    unasked; without them its rows decode on the model's forward: docs/performance.md)."""
    if loaded.device != "cpu":
        return None
    from llmcli.engine.step.lone import lone_step, rows_step
    from llmcli.engine.step.offer import MEMO, at_terminal
    from llmcli.engine.step.variant import kind, pays
    from llmcli.modelfs.memo import first_time

    if not pays(loaded) or not at_terminal() or (lone_step(loaded) and rows_step(loaded)):
        return None
    if not first_time(MEMO, f"serve|{loaded.source.path.resolve()}|{kind(loaded)}"):
        return None
    return (f"the compiled decoding steps serve uses are not all kept for it in {kind(loaded)} on this CPU; one "
            "start with `--compile` builds them (a minute or two, once), and later starts decode through them "
            "(said once)")  # fmt: skip
