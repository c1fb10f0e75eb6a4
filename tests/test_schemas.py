"""The JSON that llmcli prints matches the schemas published in docs/schemas."""

from __future__ import annotations

import json

import jsonschema
import pytest

from tests.helpers import ROOT, run_cli

SCHEMAS = ROOT / "docs" / "schemas"


def schema(name):
    return json.loads((SCHEMAS / name).read_text())


@pytest.mark.parametrize("fixture", ["tiny_dir", "qwen_config_dir", "tiny_untied_single"])
def test_inspect_json_matches_schema(fixture, request, capsys, monkeypatch):
    path = request.getfixturevalue(fixture)
    run = run_cli(["inspect", str(path), "--json", "--tensors"], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    jsonschema.validate(run.json(), schema("inspect.schema.json"))


def test_inspect_gguf_json_matches_schema(capsys, monkeypatch):
    from llmcli.modelfs.default_model import default_gguf

    run = run_cli(["inspect", str(default_gguf()), "--json", "--tensors"], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    jsonschema.validate(run.json(), schema("inspect-gguf.schema.json"))


def test_generate_json_matches_schema(tiny_dir, capsys, monkeypatch):
    run = run_cli(["generate", "-m", str(tiny_dir), "hello", "-n", "4", "-t", "0.9", "--json"], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    jsonschema.validate(run.json(), schema("generate.schema.json"))
    beams = run_cli(
        ["generate", "-m", str(tiny_dir), "hello", "-n", "4", "--num-beams", "2", "--json"], capsys, monkeypatch
    )
    data = beams.json()
    jsonschema.validate(data, schema("generate.schema.json"))
    assert data["stats"]["time_to_first_token"] is None  # beam search takes no streamer
    logprobs = run_cli(
        ["generate", "-m", str(tiny_dir), "hello", "-n", "3", "--logprobs", "2", "--json"], capsys, monkeypatch
    )
    jsonschema.validate(logprobs.json(), schema("generate.schema.json"))
    assert len(logprobs.json()["outputs"][0]["logprobs"]) == len(logprobs.json()["outputs"][0]["token_ids"])
    int4 = run_cli(["generate", "-m", str(tiny_dir), "hello", "-n", "3", "--quantize", "int4", "--json"],
                   capsys, monkeypatch)  # fmt: skip
    jsonschema.validate(int4.json(), schema("generate.schema.json"))
    assert int4.json()["model"]["quantization"]["scheme"] == "int4"


def test_rich_markup_in_model_files_prints_literally(tiny_copy, capsys, monkeypatch):
    cfg = json.loads((tiny_copy / "config.json").read_text())
    cfg["[bold]custom_key[/bold]"] = "[/INST] [red]not red[/red]"
    (tiny_copy / "config.json").write_text(json.dumps(cfg))
    for mode in ("rich", "plain"):
        monkeypatch.setenv("LLMCLI_OUTPUT", mode)
        run = run_cli(["inspect", str(tiny_copy), "--only", "config"], capsys, monkeypatch)
        assert run.code == 0, run.stderr
        assert "[bold]custom_key[/bold]" in run.stdout
        assert "[/INST] [red]not red[/red]" in run.stdout


def test_structured_generate_json_matches_schema(tiny_dir, capsys, monkeypatch):
    args = ["generate", "-m", str(tiny_dir), "hi", "-n", "40", "--regex", "(yes|no)", "--greedy", "--json"]
    run = run_cli(args, capsys, monkeypatch)
    assert run.code == 0, run.stderr
    data = run.json()
    jsonschema.validate(data, schema("generate.schema.json"))
    assert data["outputs"][0]["valid"] is True and data["constraint"]["kind"] == "regex"


def test_lens_json_matches_schema(tiny_dir, capsys, monkeypatch):
    args = ["lens", "-m", str(tiny_dir), "hello world", "--positions", "all", "--track", " world", "--attention"]
    run = run_cli([*args, "--json"], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    jsonschema.validate(run.json(), schema("lens.schema.json"))


def test_compare_json_matches_schema(tiny_dir, tmp_path, capsys, monkeypatch):
    text = "the capital of France is Paris and the capital of Italy is Rome " * 3
    ref = tmp_path / "tiny.ref"
    saved = run_cli(["score", "-m", str(tiny_dir), text, "--save-ref", str(ref), "--json"], capsys, monkeypatch)
    assert saved.code == 0, saved.stderr
    for args in ([str(tiny_dir)], ["--base-ref", str(ref), str(tiny_dir)]):
        run = run_cli(
            ["compare", *args, "--text", text, "--candidate-dtype", "bfloat16", "--json"], capsys, monkeypatch
        )
        assert run.code == 0, run.stderr
        jsonschema.validate(run.json(), schema("compare.schema.json"))


def test_dpo_json_and_each_line_match_the_schema(tiny_dir, tiny_untied_single, tmp_path, capsys, monkeypatch):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "hello", "chosen": " world", "rejected": " there"}\n')
    args = ["dpo", str(tiny_untied_single), "--ref", str(tiny_dir), "-f", str(pairs)]
    run = run_cli([*args, "--json"], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    jsonschema.validate(run.json(), schema("dpo.schema.json"))
    line = run_cli([*args, "--each"], capsys, monkeypatch).stdout.splitlines()[0]
    pair = schema("dpo.schema.json")["$defs"]["pair"]
    jsonschema.validate(json.loads(line), {**pair, "$defs": schema("dpo.schema.json")["$defs"]})


def test_quantize_json_matches_schema(tiny_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "int8"
    run = run_cli(["quantize", str(tiny_dir), str(out), "--to", "int8", "--json"], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    data = run.json()
    jsonschema.validate(data, schema("quantize.schema.json"))
    assert data["scheme"] == "int8" and data["group_size"] == 32 and data["path"] == str(out)
    assert data["requantized"] == {}


def test_reward_json_and_each_line_match_schema(tmp_path, capsys, monkeypatch):
    from tests.analysis.test_dpo import STANDARD, write
    from tests.analysis.test_reward import build_reward_model

    model = tmp_path / "rm"
    build_reward_model(model)
    for rows in (STANDARD, [{"prompt": "a", "completion": "b"}]):
        data_file = write(tmp_path / "rows.jsonl", rows)
        run = run_cli(["reward", str(model), "-f", str(data_file), "--json"], capsys, monkeypatch)
        assert run.code == 0, run.stderr
        jsonschema.validate(run.json(), schema("reward.schema.json"))
        line = run_cli(["reward", str(model), "-f", str(data_file), "--each"], capsys, monkeypatch).jsonl()[0]
        row = schema("reward.schema.json")["$defs"]["row"]
        jsonschema.validate(line, row)


def test_kto_json_and_each_line_match_schema(tiny_dir, tiny_untied_single, tmp_path, capsys, monkeypatch):
    from tests.analysis.test_dpo import write
    from tests.analysis.test_kto import ROWS

    data = write(tmp_path / "kto.jsonl", ROWS)
    args = ["dpo", str(tiny_untied_single), "--ref", str(tiny_dir), "-f", str(data), "--loss", "kto"]
    run = run_cli([*args, "--json"], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    jsonschema.validate(run.json(), schema("kto.schema.json"))
    row = schema("kto.schema.json")["$defs"]["row"]
    for line in run_cli([*args, "--each"], capsys, monkeypatch).jsonl():
        jsonschema.validate(line, row)


def test_sample_json_and_each_line_match_schema(tiny_dir, tmp_path, capsys, monkeypatch):
    from tests.analysis.test_dpo import write
    from tests.analysis.test_sample import PROMPTS

    prompts = write(tmp_path / "prompts.jsonl", PROMPTS)
    args = ["sample", "-m", str(tiny_dir), "-f", str(prompts), "-n", "2", "--max-new-tokens", "4", "--reward",
            "logprob"]  # fmt: skip
    run = run_cli([*args, "--json"], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    jsonschema.validate(run.json(), schema("sample.schema.json"))
    group = {**schema("sample.schema.json")["$defs"]["group"], "$defs": schema("sample.schema.json")["$defs"]}
    for line in run_cli([*args, "--each"], capsys, monkeypatch).jsonl():
        jsonschema.validate(line, group)


def test_models_and_prune_json_match_their_schemas(tmp_path, capsys, monkeypatch):
    from tests.engine.test_step_prune import kept_step

    monkeypatch.setenv("LLMCLI_HOME", str(tmp_path / "home"))
    kept_step(tmp_path / "home" / "steps", "old", source=tmp_path, torch="2.0.0")
    listed = run_cli(["models", "--json"], capsys, monkeypatch)
    assert listed.code == 0, listed.stderr
    jsonschema.validate(listed.json(), schema("models.schema.json"))
    assert [s["torch"] for s in listed.json()["compiled_steps"]] == ["2.0.0"]
    for args in (["--dry-run"], []):
        run = run_cli(["models", "prune", "--json", *args], capsys, monkeypatch)
        jsonschema.validate(run.json(), schema("models-prune.schema.json"))
    assert run.json()["freed_bytes"] > 0
