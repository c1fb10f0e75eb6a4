"""engine.step.offer: a run that would decode through a library holding the weights, were one kept, and asks
for enough tokens says once how to build it, to a person at a terminal; never with --no-compile, for a few
tokens, without a terminal, or once one is kept."""

from __future__ import annotations

from tests.helpers import run_cli

OFFER = "`--compile` builds it"


def generate(tiny_dir, home, args, capsys, monkeypatch, *, terminal: bool = True) -> str:
    from llmcli.engine.step import offer

    monkeypatch.setattr(offer, "at_terminal", lambda: terminal)  # capsys's stderr is no TTY
    monkeypatch.setenv("LLMCLI_HOME", str(home))
    run = run_cli(["generate", "-m", str(tiny_dir), "--dtype", "bfloat16", "hi", "--greedy", *args], capsys,
                  monkeypatch)  # fmt: skip
    assert run.code == 0, run.stderr
    return run.stderr


def test_the_compile_offer_is_made_once_where_it_pays(tiny_dir, tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    assert OFFER not in generate(tiny_dir, home, ["-n", "8"], capsys, monkeypatch)  # too short to pay
    assert OFFER not in generate(tiny_dir, home, ["-n", "64", "--no-compile"], capsys, monkeypatch)
    assert OFFER not in generate(tiny_dir, home, ["-n", "64"], capsys, monkeypatch, terminal=False)  # a script
    said = generate(tiny_dir, home, ["-n", "64"], capsys, monkeypatch)
    assert said.count(OFFER) == 1 and f"{tiny_dir.name}: no compiled decoding step" in said
    assert OFFER not in generate(tiny_dir, home, ["-n", "64"], capsys, monkeypatch)  # said once


def test_no_offer_once_a_library_is_kept(tiny_dir, step_home, capsys, monkeypatch):
    generate(tiny_dir, step_home, ["-n", "4", "--compile"], capsys, monkeypatch)  # kept already, or built now
    assert OFFER not in generate(tiny_dir, step_home, ["-n", "64", "--json"], capsys, monkeypatch)


def test_an_int4_model_is_offered_the_library_that_binds_its_layers(tiny_dir, tmp_path, capsys, monkeypatch):
    """Its library binds the int4 layers (measured faster on a small model); not past MAX_BYTES of them (a 7B
    shape's int4 step gained nothing)."""
    from llmcli.engine.step import variant

    home = tmp_path / "home"
    int4 = ["-n", "64", "--quantize", "int4"]
    bound = variant.MAX_BYTES
    monkeypatch.setattr(variant, "MAX_BYTES", 1000)
    assert OFFER not in generate(tiny_dir, home, int4, capsys, monkeypatch)
    monkeypatch.setattr(variant, "MAX_BYTES", bound)  # not undo(): it would undo conftest's isolation too
    said = generate(tiny_dir, home, int4, capsys, monkeypatch)
    assert said.count(OFFER) == 1 and "kept for it in bfloat16 + int4 on this CPU" in said
