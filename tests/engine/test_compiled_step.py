"""The decoding step compiled ahead of time (engine.step): built once by --compile, kept in llmcli's home and
used by later runs without the flag, never with --no-compile; its tokens equal the plain step's in float32
(greedy and seeded sampling) on a tiny model of each kind of attention mask, as a library that holds the
weights and as one they are bound to; changed weights never meet an old library; a damaged kept library is
found and built again; a build that fails leaves the plain step with one stderr line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.engine.test_generate import PROMPT
from tests.helpers import run_cli

GREEDY = ["--greedy", "-n", "12", "--min-new-tokens", "12"]
SAMPLED = ["--seed", "7", "--temperature", "0.9", "--top-p", "0.95", "-n", "12", "--min-new-tokens", "12"]


@pytest.fixture(scope="module")
def step_home(tmp_path_factory) -> Path:
    """A home of the module's own (over the session's): its first test finds none kept and builds."""
    return tmp_path_factory.mktemp("step-home")


def generate(model: Path, args: list[str], capsys, monkeypatch, home: Path):
    monkeypatch.setenv("LLMCLI_HOME", str(home))
    run = run_cli(["generate", "-m", str(model), "--dtype", "float32", PROMPT, "--json", *args], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    assert "Traceback" not in run.stderr
    data = run.json()
    return data["outputs"][0]["token_ids"], data["stats"]["compiled_step"], run.stderr


def libraries(home: Path) -> list[Path]:
    return sorted((home / "steps").glob("*/step-*.so"))


def holding_weights(monkeypatch) -> None:
    """A float32 model's library built with its weights, as a bfloat16 one's is (tokens compare in float32)."""
    from llmcli.engine.step import variant

    monkeypatch.setattr(variant, "DTYPES", ("float32", "bfloat16"))


def holds(library: Path) -> bool:
    return "weights_sha256" in json.loads((library.parent / "manifest.json").read_text())["key"]


@pytest.mark.parametrize("weights", ["held", "bound"])
@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_built_once_then_kept_and_equal_to_the_plain_step(kind, weights, tiny_dir, tiny_qwen2, step_home, capsys,
                                                          monkeypatch):  # fmt: skip
    if weights == "held":
        holding_weights(monkeypatch)
    model = tiny_dir if kind == "llama" else tiny_qwen2
    plain, how, _ = generate(model, [*GREEDY, "--no-compile"], capsys, monkeypatch, step_home)
    assert how is None
    before = set(libraries(step_home))
    built, how, err = generate(model, [*GREEDY, "--compile"], capsys, monkeypatch, step_home)
    assert how == "built" and built == plain
    assert err.count("compiling the decoding step") == 1 and err.count("compiled the decoding step in ") == 1
    (library,) = set(libraries(step_home)) - before  # one library for this model
    assert holds(library) == (weights == "held")
    kept, how, err = generate(model, GREEDY, capsys, monkeypatch, step_home)  # no flag: the kept library
    assert how == "loaded" and kept == plain and "compil" not in err
    sampled, how, _ = generate(model, SAMPLED, capsys, monkeypatch, step_home)
    plain_sampled, plain_how, _ = generate(model, [*SAMPLED, "--no-compile"], capsys, monkeypatch, step_home)
    assert (how, plain_how) == ("loaded", None) and sampled == plain_sampled


def test_models_lists_the_kept_steps(tiny_dir, step_home, capsys, monkeypatch):
    generate(tiny_dir, [*GREEDY, "--compile"], capsys, monkeypatch, step_home)  # kept already, or built now
    run = run_cli(["models", "--json"], capsys, monkeypatch)
    steps = run.json()["compiled_steps"]
    assert {s["path"] for s in steps} == {str(p.parent) for p in libraries(step_home)}
    assert {s["dtype"] for s in steps} == {"float32"} and all(s["bytes"] > 0 and s["build_seconds"] for s in steps)
    assert {s["weights"] for s in steps} == {"held" if holds(p) else "bound" for p in libraries(step_home)}
    assert str(tiny_dir) in {s["model"] for s in steps} and {s["rows"] for s in steps} == {"one"}  # generate's
    assert "compiled decoding step" in run_cli(["models"], capsys, monkeypatch).stdout


def test_no_library_no_compile(tiny_dir, tmp_path, capsys, monkeypatch):
    """Without --compile and with nothing kept, the plain step decodes and nothing is built."""
    _, how, err = generate(tiny_dir, GREEDY, capsys, monkeypatch, tmp_path)
    assert how is None and "compil" not in err and not libraries(tmp_path)


def test_a_damaged_library_is_found_and_built_again(tiny_dir, step_home, capsys, monkeypatch):
    plain, _, _ = generate(tiny_dir, [*GREEDY, "--no-compile"], capsys, monkeypatch, step_home)
    generate(tiny_dir, [*GREEDY, "--compile"], capsys, monkeypatch, step_home)  # kept already, or built now
    library = next(p for p in libraries(step_home) if _for_llama(p) and not holds(p))  # what float32 uses
    data = bytearray(library.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged = library.with_suffix(".tmp")
    damaged.write_bytes(bytes(data))
    damaged.replace(library)  # a new file: this process has the old one loaded, and its pages must stay whole
    ids, how, err = generate(tiny_dir, GREEDY, capsys, monkeypatch, step_home)
    assert how is None and ids == plain
    assert "is damaged (its library does not match the manifest's hash); decoding with the plain step" in err
    assert err.count("damaged") == 1
    ids, how, err = generate(tiny_dir, [*GREEDY, "--compile"], capsys, monkeypatch, step_home)
    assert how == "built" and ids == plain and "building it again" in err


def test_a_library_whose_hashes_match_but_that_does_not_load_is_built_again(tiny_dir, step_home, capsys,
                                                                             monkeypatch):  # fmt: skip
    from llmcli.engine.step.store import sha256_of

    plain, _, _ = generate(tiny_dir, [*GREEDY, "--no-compile"], capsys, monkeypatch, step_home)
    generate(tiny_dir, [*GREEDY, "--compile"], capsys, monkeypatch, step_home)  # kept already, or built now
    library = next(p for p in libraries(step_home) if _for_llama(p) and not holds(p))  # what float32 uses
    garbage = library.with_suffix(".tmp")
    garbage.write_bytes(b"not a shared library")  # as one built for another glibc would be, to this machine
    digest = sha256_of(garbage)
    # under a name of its own, as keep() names a library: this process has the good one loaded by its name
    garbage.replace(library.with_name(f"step-{digest[:16]}.so"))
    library.unlink()
    manifest = library.parent / "manifest.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps(data | {"library": f"step-{digest[:16]}.so", "sha256": digest}))
    ids, how, err = generate(tiny_dir, GREEDY, capsys, monkeypatch, step_home)
    assert how is None and ids == plain and err.count("damaged (it does not load: ") == 1
    assert "decoding with the plain step" in err and "could not be compiled" not in err
    ids, how, err = generate(tiny_dir, [*GREEDY, "--compile"], capsys, monkeypatch, step_home)
    assert how == "built" and ids == plain and "building it again" in err


@pytest.mark.parametrize("weights", ["held", "bound"])
def test_onednn_measured_faster_and_the_kept_library(weights, tiny_dir, step_home, capsys, monkeypatch):
    """oneDNN's reordered weights cannot be bound to a library: where the load takes them, a library without the
    weights is not used (and nothing is said; --compile loads without them and uses it); one that holds its own
    decodes."""
    from llmcli.engine.load import dtype_probe

    if weights == "held":
        holding_weights(monkeypatch)
    plain, _, _ = generate(tiny_dir, [*GREEDY, "--no-compile"], capsys, monkeypatch, step_home)
    generate(tiny_dir, [*GREEDY, "--compile"], capsys, monkeypatch, step_home)  # kept already, or built now
    monkeypatch.setenv("LLMCLI_DTYPE_PROBE", "1")
    monkeypatch.setattr(
        dtype_probe, "_seconds", lambda shape, rows, dtype, product: 1.0 if product == "onednn" else 2.0
    )
    monkeypatch.setenv("LLMCLI_HOME", str(step_home))
    run = run_cli(["generate", "-m", str(tiny_dir), "--dtype", "float32", PROMPT, "--json", *GREEDY], capsys,
                  monkeypatch)  # fmt: skip
    data = run.json()
    assert data["model"]["dtype_choice"]["product"] == "onednn" and data["replay"]["prepacked"]
    assert data["stats"]["compiled_step"] == (None if weights == "bound" else "loaded") and "compil" not in run.stderr
    assert data["outputs"][0]["token_ids"] == plain
    _, how, _ = generate(tiny_dir, [*GREEDY, "--compile"], capsys, monkeypatch, step_home)
    assert how == "loaded"


def test_changed_weights_never_meet_an_old_library(tiny_copy, tmp_path, capsys, monkeypatch):
    """A library that holds the weights is keyed by the files' hashes: the same model with other weights (the
    same names, shapes and dtypes) finds none and decodes with the plain step, until --compile builds its own."""
    from safetensors.torch import load_file, save_file

    holding_weights(monkeypatch)
    home = tmp_path / "home"
    generate(tiny_copy, [*GREEDY, "--compile"], capsys, monkeypatch, home)
    (old,) = libraries(home)
    assert holds(old)
    shards = {p: load_file(str(p)) for p in sorted(tiny_copy.glob("*.safetensors"))}
    weights, tensors = next((p, t) for p, t in shards.items() if any(n.endswith("down_proj.weight") for n in t))
    name = next(n for n in sorted(tensors) if n.endswith("down_proj.weight"))
    tensors[name] = tensors[name] * 3
    save_file(tensors, str(weights), metadata={"format": "pt"})
    plain, how, _ = generate(tiny_copy, [*GREEDY, "--no-compile"], capsys, monkeypatch, home)
    ids, how, err = generate(tiny_copy, GREEDY, capsys, monkeypatch, home)
    assert how is None and ids == plain and "compil" not in err
    ids, how, _ = generate(tiny_copy, [*GREEDY, "--compile"], capsys, monkeypatch, home)
    assert how == "built" and ids == plain and len(libraries(home)) == 2


def test_a_failed_build_decodes_with_the_plain_step(tiny_dir, tmp_path, capsys, monkeypatch):
    import llmcli.engine.step.export as export

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Compiler not found: c++")

    monkeypatch.setattr(export, "build", no_compiler)
    plain, _, _ = generate(tiny_dir, [*GREEDY, "--no-compile"], capsys, monkeypatch, tmp_path)
    ids, how, err = generate(tiny_dir, [*GREEDY, "--compile"], capsys, monkeypatch, tmp_path)
    assert how is None and ids == plain and not libraries(tmp_path)
    lines = [line for line in err.splitlines() if "could not be compiled" in line]
    assert lines == ["the decoding step could not be compiled (Compiler not found: c++); decoding with the "
                     "plain step"]  # fmt: skip


def _for_llama(library: Path) -> bool:
    """The tiny Llama's library: its one mask is a tensor, where the Qwen2's are a dict of them."""
    inputs = json.loads((library.parent / "manifest.json").read_text())["inputs"]
    return not any("full_attention" in item for item in inputs)


def test_chat_decodes_with_the_kept_step_and_no_compile_keeps_it_out(tiny_dir, step_home, tmp_path, capsys,
                                                                      monkeypatch):  # fmt: skip
    generate(tiny_dir, [*GREEDY, "--compile"], capsys, monkeypatch, step_home)  # kept already, or built now
    answers = {}
    for flags in ([], ["--no-compile"]):
        saved = tmp_path / f"chat-{len(flags)}.json"
        args = ["chat", "-m", str(tiny_dir), "--dtype", "float32", *GREEDY, *flags]
        run = run_cli(args, capsys, monkeypatch, stdin=f"Hello\n/save {saved}\n".encode())
        assert run.code == 0, run.stderr
        (record,) = json.loads(saved.read_text())["records"]
        answers[record["stats"]["compiled_step"]] = record["outputs"][0]["token_ids"]
    assert set(answers) == {"loaded", None} and answers["loaded"] == answers[None]
