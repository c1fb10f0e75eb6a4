"""`llmcli models prune`: the kept compiled steps that no run here can load again (another torch, another CPU, a
model directory that is gone, an unreadable manifest, a build's scratch folder left for days) go, the ones a run
can load stay; `--dry-run` deletes nothing and `--all` takes every step."""

from __future__ import annotations

import json
import os
import time

from tests.helpers import run_cli


def kept_step(root, name: str, *, source, **changes) -> None:
    """A step folder as engine.step.store keeps one, with this machine's key unless `changes` alter it."""
    from llmcli.engine.load.environment import cpu
    from llmcli.engine.step.store import MANIFEST, step_key

    key = {**step_key({"model_type": "llama"}, tensors=["w (2, 2) torch.float32"], attn="sdpa", cpu=cpu()),
           **changes}  # fmt: skip
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "step-0.so").write_bytes(b"x" * 1000)
    manifest = {"key": key, "library": "step-0.so", "inputs": ["torch.float32"], "source": str(source)}
    (folder / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")


def test_prune_removes_what_no_run_can_load(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LLMCLI_HOME", str(tmp_path / "home"))
    steps = tmp_path / "home" / "steps"
    model = tmp_path / "model"
    model.mkdir()
    kept_step(steps, "good", source=model)
    kept_step(steps, "old-torch", source=model, torch="2.0.0")
    kept_step(steps, "other-cpu", source=model, cpu="Another CPU|avx2|x86_64")
    kept_step(steps, "gone", source=tmp_path / "deleted-model")
    (steps / "no-manifest").mkdir()
    for hidden, age in ((".build-old", 3 * 86400), (".build-running", 0)):
        (steps / hidden).mkdir()
        then = time.time() - age
        os.utime(steps / hidden, (then, then))

    dry = run_cli(["models", "prune", "--dry-run", "--json"], capsys, monkeypatch)
    assert dry.code == 0, dry.stderr
    why = {os.path.basename(s["path"]): s["why"] for s in dry.json()["steps"]}
    assert set(why) == {"old-torch", "other-cpu", "gone", "no-manifest", ".build-old"}
    assert "torch 2.0.0" in why["old-torch"] and "another CPU" in why["other-cpu"] and "gone" in why["gone"]
    assert len(list(steps.iterdir())) == 7 and "would remove 5" in dry.stderr

    done = run_cli(["models", "prune"], capsys, monkeypatch)
    assert done.code == 0 and "removed 5 compiled step(s), freed" in done.stderr
    assert "old-torch" in done.stdout and "built with torch 2.0.0" in done.stdout
    assert sorted(p.name for p in steps.iterdir()) == [".build-running", "good"]

    everything = run_cli(["models", "prune", "--all", "--json"], capsys, monkeypatch)
    assert [os.path.basename(s["path"]) for s in everything.json()["steps"]] == ["good"]
    assert [p.name for p in steps.iterdir()] == [".build-running"]


def test_a_folder_that_will_not_go_is_an_error_naming_it(tmp_path, capsys, monkeypatch):
    from llmcli.engine.step import prune

    monkeypatch.setenv("LLMCLI_HOME", str(tmp_path / "home"))
    steps = tmp_path / "home" / "steps"
    kept_step(steps, "old-a", source=tmp_path, torch="2.0.0")
    kept_step(steps, "old-b", source=tmp_path, torch="2.0.0")
    removing = prune.shutil.rmtree
    monkeypatch.setattr(prune.shutil, "rmtree", lambda p, **kw: None if p.name == "old-a" else removing(p, **kw))
    run = run_cli(["models", "prune"], capsys, monkeypatch)
    assert run.code == 1 and run.stderr.count("\n") == 1 and "old-a: could not be removed" in run.stderr
    assert "Traceback" not in run.stderr and [p.name for p in steps.iterdir()] == ["old-a"]
