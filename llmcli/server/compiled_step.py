"""`serve --compile` on the CPU: the compiled decoding step built (or found kept) once at start, so that a row
alone in its batch decodes through it (engine.step.lone) while requests keep batching. The flag used to put
every request on generate()'s static cache, one request at a time. On a GPU it keeps that path (torch.compile
inside generate()). May import the engine and the shared top-level modules.
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
        return None
    why = "it binds the weights, which this load reordered for oneDNN (--no-prepack keeps them)"
    return f"--compile: lone rows decode on the model's forward: {why if loaded.prepacked else 'no step was built'}"
