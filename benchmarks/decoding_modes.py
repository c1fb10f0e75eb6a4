"""Structured output and prompt-lookup decoding on the default model (CPU): the figures in
docs/performance.md. Run: .venv/bin/python benchmarks/decoding_modes.py [--reps 3] > result.json

(a) decode tok/s greedy, with and without a JSON schema, and the grammar's compile time;
(b) an input-grounded task (rewrite a ~500-token passage): decode tok/s with and without --prompt-lookup,
    and whether the tokens are identical.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from llmcli.engine.generate.constraints import compile_for, parse
from llmcli.engine.generate.generation import generate
from llmcli.engine.load.loader import load
from llmcli.modelfs.source import resolve_model
from llmcli.plan import Constraint, GenerationPlan, LoadSpec

LIST_SCHEMA = {
    "type": "object",
    "properties": {"facts": {"type": "array", "items": {"type": "string"}, "minItems": 12}},
    "required": ["facts"],
}
PASSAGE = " ".join(
    [
        "The river Seine flows through Paris, dividing the city into the Left Bank and the Right Bank.",
        "Its bridges, from the Pont Neuf to the Pont Alexandre III, connect neighbourhoods with long histories.",
        "Barges carry sand, grain and tourists along the water, and booksellers line the quays above it.",
        "In summer the city turns part of the riverbank into beaches, with sand, deck chairs and music.",
        "Floods have reached the streets several times, most famously in 1910, when the water rose eight metres.",
    ]
    * 4
)


def interleaved(loaded, prompt: str, plans: list[GenerationPlan], reps: int) -> list[tuple[float, list[int]]]:
    """Median decode tok/s of each plan, the plans taking turns so that drift hits them alike."""
    rates: list[list[float]] = [[] for _ in plans]
    ids: list[list[int]] = [[] for _ in plans]
    for _ in range(reps):
        for i, plan in enumerate(plans):
            [result] = generate(loaded, [prompt], plan)
            rates[i].append(result.stats.decode_tokens_per_second)
            ids[i] = result.outputs[0].token_ids
    return [(statistics.median(r), i) for r, i in zip(rates, ids, strict=True)]


def first_difference(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def structured(loaded, reps: int) -> dict:
    prompt = "List facts about Paris as JSON."
    constraint = Constraint("json_schema", json.dumps(LIST_SCHEMA))
    started = time.perf_counter()
    grammar = parse(constraint)
    parse_seconds = time.perf_counter() - started
    compiled = compile_for(loaded, constraint, grammar, {})
    free = GenerationPlan(kwargs={"do_sample": False, "max_new_tokens": 128, "min_new_tokens": 128})
    bound = GenerationPlan(kwargs={"do_sample": False, "max_new_tokens": 128}, constraint=compiled)
    (plain_rate, _), (schema_rate, ids) = interleaved(loaded, prompt, [free, bound], reps)
    return {
        "decode_tok_s_plain": plain_rate,
        "decode_tok_s_schema": schema_rate,
        "overhead": 1 - schema_rate / plain_rate,
        "schema_output_tokens": len(ids),
        "grammar_parse_seconds": parse_seconds,
        "grammar_compile_seconds": compiled.compile_seconds,
    }


def lookup(loaded, reps: int, n: int) -> dict:
    prompt = f"Rewrite the following passage, keeping every sentence:\n\n{PASSAGE}"
    base = {"do_sample": False, "max_new_tokens": 256}
    prompt_tokens = len(loaded.tokenizer(prompt)["input_ids"])
    lookup_plan = GenerationPlan(kwargs={**base, "prompt_lookup_num_tokens": n})
    (plain_rate, plain_ids), (lookup_rate, lookup_ids) = interleaved(
        loaded, prompt, [GenerationPlan(kwargs=base), lookup_plan], reps
    )
    return {
        "prompt_tokens": prompt_tokens,
        "generated_tokens": len(plain_ids),
        "prompt_lookup_num_tokens": n,
        "decode_tok_s_plain": plain_rate,
        "decode_tok_s_lookup": lookup_rate,
        "speedup": lookup_rate / plain_rate,
        "identical_tokens": plain_ids == lookup_ids,
        "first_difference_at": first_difference(plain_ids, lookup_ids),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--lookup", type=int, default=10)
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()
    loaded = load(resolve_model(None), LoadSpec(dtype=args.dtype))
    generate(loaded, ["warm up"], GenerationPlan(kwargs={"max_new_tokens": 4}))
    report = {
        "model": loaded.describe(),
        "reps": args.reps,
        "structured": structured(loaded, args.reps),
        "prompt_lookup": lookup(loaded, args.reps, args.lookup),
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
