"""Remote code shown and pinned: inspect lists every file --trust-remote-code would run (auto_map's and what
they import relatively) with hashes and one digest; a wrong digest stops before any file is imported; the
right one loads; config keys through which other loaders ran code are refused."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.helpers import assert_clean_error, run_cli

CONFIGURATION = (
    "from transformers import LlamaConfig\n\n\nclass TinyConfig(LlamaConfig):\n    model_type = 'tiny_custom'\n"
)
MODELING = (
    "from .helper_tiny import mark\n"
    "from .configuration_tiny import TinyConfig\n"
    "from transformers import LlamaForCausalLM\n\n"
    "mark()\n\n\n"
    "class TinyForCausalLM(LlamaForCausalLM):\n    config_class = TinyConfig\n"
)


@pytest.fixture
def custom(tiny_dir, tmp_path, request):
    """A copy of the tiny model whose config asks for its own code; helper_tiny.py writes a marker when imported."""
    model = tmp_path / f"custom-{request.node.name[-24:].strip('[]_')}"
    shutil.copytree(tiny_dir, model)
    marker = tmp_path / "imported.txt"
    (model / "configuration_tiny.py").write_text(CONFIGURATION)
    (model / "modeling_tiny.py").write_text(MODELING)
    (model / "helper_tiny.py").write_text(f"def mark():\n    open({str(marker)!r}, 'a').write('imported\\n')\n")
    cfg = json.loads((model / "config.json").read_text())
    cfg["model_type"] = "tiny_custom"
    cfg["auto_map"] = {"AutoConfig": "configuration_tiny.TinyConfig",
                       "AutoModelForCausalLM": "modeling_tiny.TinyForCausalLM"}  # fmt: skip
    (model / "config.json").write_text(json.dumps(cfg))
    return model, marker


def digest_of(model, capsys, monkeypatch):
    data = run_cli(["inspect", str(model), "--only", "config", "--json"], capsys, monkeypatch).json()
    return data["remote_code"]


def test_inspect_lists_the_files_and_their_digest(custom, capsys, monkeypatch):
    import hashlib

    model, marker = custom
    code = digest_of(model, capsys, monkeypatch)
    assert [f["path"] for f in code["files"]] == ["configuration_tiny.py", "helper_tiny.py", "modeling_tiny.py"]
    for f in code["files"]:
        raw = (model / f["path"]).read_bytes()
        assert f["sha256"] == hashlib.sha256(raw).hexdigest() and f["bytes"] == len(raw)
    assert next(f for f in code["files"] if f["path"] == "modeling_tiny.py")["imports"] == ["transformers"]
    assert len(code["digest"]) == 64 and code["external"] == [] and not marker.exists()
    shown = run_cli(["inspect", str(model), "--only", "config"], capsys, monkeypatch).stdout
    assert "Remote code" in shown and code["digest"] in shown


def test_a_wrong_digest_stops_before_any_import_and_the_right_one_loads(custom, capsys, monkeypatch):
    model, marker = custom
    digest = digest_of(model, capsys, monkeypatch)["digest"]
    args = ["generate", "-m", str(model), "hi", "-n", "3", "--greedy", "--raw"]
    wrong = run_cli([*args, "--trust-remote-code-digest", "0" * 64], capsys, monkeypatch)
    assert_clean_error(wrong, 1, f"the remote code's digest is {digest}, not the pinned", "the files that would run")
    assert not marker.exists()
    right = run_cli([*args, "--trust-remote-code-digest", digest], capsys, monkeypatch)
    assert right.code == 0, right.stderr
    assert marker.exists()  # the pinned code did run


def test_a_changed_file_is_named_and_trust_alone_prints_the_digest(custom, capsys, monkeypatch):
    model, marker = custom
    before = digest_of(model, capsys, monkeypatch)["digest"]
    (model / "helper_tiny.py").write_text("def mark():\n    pass  # changed\n")
    args = ["tokenize", "-m", str(model), "hi"]
    changed = run_cli([*args, "--trust-remote-code-digest", before], capsys, monkeypatch)
    assert_clean_error(changed, 1, "differing: helper_tiny.py (changed)")
    trusting = run_cli([*args, "--trust-remote-code"], capsys, monkeypatch)
    assert trusting.code == 0, trusting.stderr
    after = digest_of(model, capsys, monkeypatch)["digest"]
    assert f"--trust-remote-code-digest {after}" in trusting.stderr and after != before


def test_code_elsewhere_is_flagged(custom, capsys, monkeypatch):
    model, _ = custom
    cfg = json.loads((model / "config.json").read_text())
    cfg["auto_map"]["AutoTokenizer"] = ["someone/other-repo--tokenization_x.XTokenizer", None]
    (model / "config.json").write_text(json.dumps(cfg))
    code = digest_of(model, capsys, monkeypatch)
    assert code["external"] == ["someone/other-repo--tokenization_x.XTokenizer"]
    pinned = run_cli(["generate", "-m", str(model), "hi", "--trust-remote-code-digest", code["digest"]],
                     capsys, monkeypatch)  # fmt: skip
    assert_clean_error(pinned, 1, "another repository")
