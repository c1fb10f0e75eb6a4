"""Structured output through xgrammar: every output parses and validates, or says it was cut short."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from tests.helpers import assert_clean_error, run_cli

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z ]{1,12}$"},
        "kind": {"enum": ["cat", "dog", "bird"]},
        "happy": {"type": "boolean"},
    },
    "required": ["name", "kind", "happy"],
    "additionalProperties": False,
}


def gen(model_dir, args, capsys, monkeypatch, stdin=None):
    return run_cli(["generate", "-m", str(model_dir), *args], capsys, monkeypatch, stdin=stdin)


def check_jsonl(run, schema):
    """Each output marked valid parses strictly and validates; the others make the exit code 1."""
    valid = 0
    outputs = [o for record in run.jsonl() for o in record["outputs"]]
    for out in outputs:
        if out["valid"]:
            jsonschema.validate(json.loads(out["text"]), schema)
            valid += 1
    assert run.code == (0 if valid == len(outputs) else 1), run.stderr
    return valid, len(outputs)


def test_sampled_outputs_always_validate_on_a_random_model(tiny_dir, tmp_path, capsys, monkeypatch):
    """A random model at temperature 1.0 samples anything the grammar allows: 4 seeds × 8 prompts."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"describe pet number {i}" for i in range(8)) + "\n")
    total_complete = total = 0
    for seed in range(4):
        args = ["--prompts", str(prompts), "--json-schema", json.dumps(PERSON), "-t", "1.0", "--seed", str(seed)]
        run = gen(tiny_dir, [*args, "-n", "120", "--json", "--raw"], capsys, monkeypatch)
        complete, count = check_jsonl(run, PERSON)
        for out in (o for record in run.jsonl() for o in record["outputs"]):
            assert out["valid"] or out["finish_reason"] == "length", out  # a pattern keeps strings clean
        total_complete, total = total_complete + complete, total + count
    assert total == 32 and total_complete >= 16, (total_complete, total)


def test_a_complete_but_invalid_document_is_caught(tiny_dir, tmp_path, capsys, monkeypatch):
    """xgrammar 0.2.8 lets control characters into strings with maxLength: llmcli's strict check catches
    them (valid false, exit 1) instead of passing an invalid document on with exit 0."""
    schema = dict(PERSON, properties=dict(PERSON["properties"], name={"type": "string", "maxLength": 12}))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"describe pet number {i}" for i in range(8)) + "\n")
    caught = 0
    for seed in (2, 3):
        args = ["--prompts", str(prompts), "--json-schema", json.dumps(schema), "-t", "1.0", "--seed", str(seed)]
        run = gen(tiny_dir, [*args, "-n", "120", "--json", "--raw"], capsys, monkeypatch)
        check_jsonl(run, schema)
        for out in (o for record in run.jsonl() for o in record["outputs"]):
            if not out["valid"] and out["finish_reason"] != "length":
                with pytest.raises(json.JSONDecodeError):
                    json.loads(out["text"])
                caught += 1
    assert caught >= 1


def test_default_model_fills_a_schema_at_temperature_one(default_model_dir, capsys, monkeypatch):
    for seed in range(3):
        args = ["Describe a pet as JSON.", "--json-schema", json.dumps(PERSON), "-t", "1.0", "--seed", str(seed)]
        run = gen(default_model_dir, [*args, "-n", "80", "--json"], capsys, monkeypatch)
        assert check_jsonl(run, PERSON) == (1, 1), run.stdout


def test_cut_short_is_finish_reason_length_and_exit_1(tiny_dir, capsys, monkeypatch):
    run = gen(tiny_dir, ["hi", "--json-object", "-n", "2", "--greedy", "--json"], capsys, monkeypatch)
    assert run.code == 1
    out = run.json()["outputs"][0]
    assert out["finish_reason"] == "length" and out["valid"] is False
    assert run.json()["constraint"] == {"kind": "json_object", "source": ""}
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "do not satisfy --json-object: cut short (finish_reason length)" in lines[0]
    streamed = gen(tiny_dir, ["hi", "--json-object", "-n", "2", "--greedy"], capsys, monkeypatch)
    assert streamed.code == 1 and streamed.stdout.endswith("\n")


def test_regex_and_grammar(tiny_dir, tmp_path, capsys, monkeypatch):
    for seed in range(3):
        run = gen(
            tiny_dir, ["hi", "--regex", r"[0-9]{3}-[a-z]{2,4}", "-t", "1", "--seed", str(seed)], capsys, monkeypatch
        )
        assert run.code == 0, run.stderr
        assert re.fullmatch(r"[0-9]{3}-[a-z]{2,4}", run.stdout.rstrip("\n")), run.stdout
    grammar = tmp_path / "answer.gbnf"
    grammar.write_text('root ::= "yes" | "no" | "maybe " number\nnumber ::= [1-9] [0-9]?\n')
    seen = set()
    for seed in range(4):
        run = gen(tiny_dir, ["hi", "--grammar", str(grammar), "-t", "1", "--seed", str(seed)], capsys, monkeypatch)
        assert run.code == 0, run.stderr
        assert re.fullmatch(r"yes|no|maybe [1-9][0-9]?", run.stdout.rstrip("\n")), run.stdout
        seen.add(run.stdout)
    assert len(seen) >= 2


def test_each_line_batch_and_chat(tiny_dir, capsys, monkeypatch):
    run = gen(
        tiny_dir,
        ["--each-line", "--json-schema", json.dumps(PERSON), "-n", "120", "--greedy", "--json", "--raw"],
        capsys,
        monkeypatch,
        stdin=b"one\ntwo\nthree\n",
    )
    assert len(run.jsonl()) == 3
    check_jsonl(run, PERSON)
    chat = run_cli(
        ["chat", "-m", str(tiny_dir), "--regex", "(yes|no)", "-t", "1", "--seed", "1"],
        capsys,
        monkeypatch,
        stdin=b"first?\nsecond?\n",
    )
    assert chat.code == 0, chat.stderr
    assert [line for line in chat.stdout.splitlines() if line] and all(
        line in ("yes", "no") for line in chat.stdout.splitlines() if line
    )


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--grammar", "{grammar}"], "--grammar: EBNF parser error"),
        (["--regex", "a(b"], "--regex: Regex parsing error"),
        (["--json-schema", '{"type": "object", "properties": {"a": {"type": "nonsense"}}}'], "properties/a/type"),
    ],
)
def test_bad_grammars_are_usage_errors(tiny_dir, tmp_path, capsys, monkeypatch, args, needle):
    bad = tmp_path / "bad.ebnf"
    bad.write_text('root ::= "a" |\n')
    run = gen(tiny_dir, ["hi", *[str(bad) if a == "{grammar}" else a for a in args]], capsys, monkeypatch)
    assert_clean_error(run, 2, needle)
