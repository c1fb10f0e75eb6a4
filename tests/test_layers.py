"""The layers hold: torch-free modules stay torch-free, usage errors cost nothing, the flag table drives the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llmcli.flags import BY_KEY, CHAT_KEYS, FLAGS, SAMPLING_KEYS
from tests.helpers import ROOT, run_cli

TORCH_FREE = [
    "llmcli.cli",
    "llmcli.errors",
    "llmcli.output",
    "llmcli.units",
    "llmcli.quiet",
    "llmcli.scoring",
    "llmcli.flags",
    "llmcli.genargs",
    "llmcli.plan",
    "llmcli.prompts",
    "llmcli.sample_plan",
    "llmcli.client",
    *(f"llmcli.server.{m.stem}" for m in (ROOT / "llmcli" / "server").glob("*.py") if m.stem != "__init__"),
    *(f"llmcli.foreign.{m.stem}" for m in (ROOT / "llmcli" / "foreign").glob("*.py") if m.stem != "__init__"),
    "llmcli.jobs",
    *(f"llmcli.modelfs.{m.stem}" for m in (ROOT / "llmcli" / "modelfs").glob("*.py") if m.stem != "__init__"),
    *(f"llmcli.reports.{m.stem}" for m in (ROOT / "llmcli" / "reports").glob("*.py") if m.stem != "__init__"),
    *(f"llmcli.commands.{m.stem}" for m in (ROOT / "llmcli" / "commands").glob("*.py") if m.stem != "__init__"),
]


def _in_fresh_interpreter(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout.decode().splitlines()[-1])


def test_torch_free_layers_import_neither_torch_nor_the_engine():
    """modelfs, reports, commands and the pure layers never import torch (or transformers, the engine or the
    analyses) at module level; commands reach them lazily, inside the command."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {TORCH_FREE!r}:\n"
        "    importlib.import_module(name)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')"
        " or m.startswith(('llmcli.engine', 'llmcli.analysis')))\n"
        "print(json.dumps(heavy))"
    )
    assert _in_fresh_interpreter(code) == []


def test_the_pairs_reader_is_pure():
    """dpo reads and checks a pairs file before any model loads: no torch, transformers or engine for that."""
    code = (
        "import json, sys; import llmcli.analysis.pairs\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')"
        " or m.startswith('llmcli.engine'))))"
    )
    assert _in_fresh_interpreter(code) == []


USAGE_ERRORS = {
    "attn choice": (["generate", "--attn", "bogus", "hi"], "--attn"),
    "dtype choice": (["generate", "--dtype", "fp8", "hi"], "--dtype"),
    "quantize choice": (["chat", "--quantize", "int3"], "--quantize"),
    "early-stopping choice": (["generate", "--early-stopping", "maybe", "hi"], "--early-stopping"),
    "compile with int8-dynamic": (
        ["generate", "--compile", "--quantize", "int8-dynamic", "hi"],
        "--compile and --quantize int8-dynamic",
    ),
    "compile with int8-dynamic in bench": (
        ["bench", "--compile", "--quantize", "int8-dynamic"],
        "--compile and --quantize int8-dynamic",
    ),
    "int8-dynamic with a dtype": (
        ["generate", "--quantize", "int8-dynamic", "--dtype", "bfloat16", "hi"],
        "--quantize int8-dynamic",
    ),
    "int8-dynamic on a GPU": (["generate", "--quantize", "int8-dynamic", "--device", "cuda", "hi"], "int8-dynamic"),
    "group size value": (["generate", "--quantize", "int4", "--group-size", "48", "hi"], "--group-size 48"),
    "group size power of two too big": (["score", "--quantize", "int4", "--group-size", "512", "hi"], "--group-size"),
    "group size without a scheme": (["generate", "--group-size", "32", "hi"], "--group-size goes with"),
    "quantize on mps": (["generate", "--quantize", "int4", "--device", "mps", "hi"], "not mps"),
    "quantize scheme": (["quantize", "m", "out", "--to", "int3"], "--to"),
    "quantize group value": (["quantize", "m", "out", "--to", "int8", "--group-size", "48"], "--group-size 48"),
    "logprobs with beams": (["generate", "--logprobs", "2", "--num-beams", "2", "hi"], "--logprobs"),
    "merge without adapter": (["generate", "--merge", "hi"], "--merge goes with --adapter"),
    "top-p range": (["generate", "--top-p", "1.5", "hi"], "--top-p must be in (0, 1]"),
    "greedy with temperature": (["generate", "--greedy", "-t", "0.7", "hi"], "--greedy contradicts"),
    "device spelling": (["generate", "--device", "gpu0", "hi"], "--device"),
    "device index": (["score", "--device", "cuda:x", "hi"], "cuda:N"),
    "next-token filters": (["next-token", "--temperature", "0", "--top-k", "3", "hi"], "greedy"),
    "set key": (["generate", "--set", "novalue", "hi"], "key=value"),
    "ps without a server": (["ps"], "ps needs a server"),
    "keep-alive duration": (["serve", "--keep-alive", "soon"], "--keep-alive soon"),
    "tool parser": (["serve", "--tool-parser", "xml"], "--tool-parser xml: expected one of hermes"),
    "reward without a file": (["reward", "m"], "reward needs the texts"),
    "reward on a server": (["reward", "m", "-f", "x.jsonl", "--server", "http://127.0.0.1:9"], "reward --server"),
    "dpo beta": (["dpo", "--ref", "x", "-f", "p.jsonl", "--beta", "0"], "--beta must be > 0"),
    "dpo loss": (["dpo", "--ref", "x", "-f", "p.jsonl", "--loss", "orpo"], "--loss"),
    "kto weights": (["dpo", "--ref", "x", "-f", "p.jsonl", "--loss", "kto", "--desirable-weight", "0"], "must be > 0"),
    "sample without prompts": (["sample"], "sample needs the prompts"),
    "sample keep": (
        ["sample", "-f", "p.jsonl", "-n", "2", "--reward", "logprob", "--keep", "top-3", "--sft", "s"],
        "K must be",
    ),
    "dpo pairs": (["dpo", "--ref", "x"], "dpo needs the pairs: -f pairs.jsonl"),
    "dpo reference": (["dpo", "-f", "p.jsonl"], "dpo needs a reference"),
    "dpo two references": (["dpo", "-f", "p", "--ref-server", "local", "--ref-logps", "r"], "pick one"),
    "dpo policy on a server": (["dpo", "-f", "p", "--server", "local"], "with --server the policy runs there"),
    "chat template file": (["serve", "--chat-template", "/no/such.jinja"], "--chat-template /no/such.jinja: cannot"),
    "server scheme": (["score", "--server", "ftp://x", "hi"], "expected http://HOST:PORT"),
    "dtype over server": (["next-token", "--server", "local", "--dtype", "float32", "hi"], "--dtype configures"),
    "system without chat": (["tokenize", "--system", "x", "hi"], "--system goes with --chat"),
    "next-token system without chat": (["next-token", "--system", "x", "hi"], "--system goes with --chat"),
    "lens chat and raw": (["lens", "--chat", "--raw", "hi"], "--chat and --raw contradict each other"),
    "lens over a server": (["lens", "--server", "local", "hi"], "lens needs the model's hidden states"),
    "threads": (["chat", "--threads", "0"], "--threads"),
    "schema not JSON": (["generate", "--json-schema", "{bad", "hi"], "--json-schema: not valid JSON"),
    "schema not a schema": (["generate", "--json-schema", '{"type": 3}', "hi"], "not a valid JSON Schema at type"),
    "two constraints": (["generate", "--json-object", "--regex", "x", "hi"], "both constrain the output"),
    "constraint with beams": (["generate", "--json-object", "--num-beams", "2", "hi"], "not with beam search"),
    "two drafters": (["generate", "--prompt-lookup", "2", "--assistant-model", "x", "hi"], "pick one"),
    "drafts with beams": (["generate", "--prompt-lookup", "2", "--num-beams", "2", "hi"], "one sequence"),
    "constraint with min tokens": (["chat", "--regex", "x", "--min-new-tokens", "3"], "drop --min-new-tokens"),
    "gguf --depth": (["inspect", "{gguf}", "--depth", "2"], "--depth does not apply to a GGUF file"),
    "gguf --only": (["inspect", "{gguf}", "--only", "config"], "--only does not apply to a GGUF file"),
    "gguf --base": (["inspect", "{gguf}", "--base", "x"], "--base does not apply to a GGUF file"),
    "adapter --tensors": (["inspect", "{adapter}", "--tensors"], "--tensors does not apply to a LoRA adapter"),
    "adapter --context": (["inspect", "{adapter}", "--context", "9"], "--context does not apply to a LoRA adapter"),
    "directory --base": (["inspect", "{model}", "--base", "x"], "--base does not apply to a model directory"),
}


@pytest.fixture(scope="module")
def usage_runs(tmp_path_factory):
    """Every usage error above, each run through the real entry point in one fresh interpreter, recording
    the exit code, stderr and whether torch, transformers or a model header reader was imported by then."""
    from llmcli.modelfs.default_model import default_gguf

    base = tmp_path_factory.mktemp("usage")
    (base / "adapter").mkdir()
    (base / "adapter" / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4, "lora_alpha": 8}')
    (base / "model").mkdir()
    (base / "model" / "config.json").write_text('{"model_type": "llama"}')
    paths = {"gguf": str(default_gguf()), "adapter": str(base / "adapter"), "model": str(base / "model")}
    cases = {name: [paths.get(a.strip("{}"), a) for a in argv] for name, (argv, _) in USAGE_ERRORS.items()}
    code = (
        "import contextlib, io, json, sys\n"
        "from llmcli.cli import main\n"
        "out = {}\n"
        f"for name, argv in {cases!r}.items():\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit as exc:\n"
        "            status = exc.code\n"
        "    heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'safetensors',"
        " 'gguf') or m.startswith(('llmcli.engine', 'llmcli.analysis')))\n"
        "    out[name] = {'code': status, 'stderr': err.getvalue(), 'heavy': heavy}\n"
        "print(json.dumps(out))"
    )
    return _in_fresh_interpreter(code)


@pytest.mark.parametrize("name", list(USAGE_ERRORS))
def test_usage_errors_come_before_any_work(usage_runs, name):
    run = usage_runs[name]
    lines = [line for line in run["stderr"].splitlines() if line.strip()]
    assert run["code"] == 2, run
    assert len(lines) == 1 and lines[0].startswith("llmcli: error: "), run["stderr"]
    assert USAGE_ERRORS[name][1] in lines[0]
    assert run["heavy"] == [], f"{name}: imported {run['heavy']} before saying no"


def test_every_flag_reaches_generate_under_its_own_name(tiny_dir, capsys, monkeypatch):
    """Each table entry is an option of generate whose value lands in generate_kwargs (via --show-config)."""
    samples = {int: "3", float: "0.5", bool: None, list: "END"}
    for flag in FLAGS:
        if flag.key in ("do_sample",):
            args = ["--greedy"]
        elif flag.key == "logit_bias":
            args = [flag.option, "5=-1.5"]
        elif flag.key == "early_stopping":
            args = [flag.option, "never"]
        else:
            args = [flag.option, samples[flag.type]]
        if flag.key in ("num_return_sequences", "length_penalty", "early_stopping"):
            args += ["--num-beams", "4"]
        run = run_cli(["generate", "-m", str(tiny_dir), "--show-config", "--json", *args], capsys, monkeypatch)
        assert run.code == 0, (flag.key, run.stderr)
        assert flag.forwarded_as in run.json()["overrides"], flag.key


def test_chat_and_next_token_options_come_from_the_table(capsys, monkeypatch):
    chat_help = run_cli(["chat", "--help"], capsys, monkeypatch).stdout
    probe_help = run_cli(["next-token", "--help"], capsys, monkeypatch).stdout
    for key, flag in BY_KEY.items():
        assert (flag.option in chat_help) == (key in CHAT_KEYS), key
        assert (flag.option in probe_help) == (key in SAMPLING_KEYS), key


def test_inspect_of_config_and_headers_imports_no_numpy_nor_pydantic(tiny_dir):
    """The torch-free inspect reads safetensors headers without the safetensors package's numpy, and the CLI
    layer parses its flags without pydantic (typer 0.29 coerces every parameter through pydantic, so the
    project keeps typer 0.28)."""
    code = (
        "import json, sys\n"
        "from llmcli.cli import app\n"
        f"sys.argv = ['llmcli', 'inspect', {str(tiny_dir)!r}, '--only', 'config,checkpoint', '--json']\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'torch', 'transformers', "
        "'safetensors', 'pydantic'})))"
    )
    assert _in_fresh_interpreter(code) == []
