"""Hub ids (org/name) resolve through huggingface_hub from a local HF cache, offline; nothing downloads."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest

from tests.helpers import cli_env, run_subprocess

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def hf_home(tiny_dir, tmp_path_factory):
    """The real cache layout: models--org--name/{blobs, refs/main, snapshots/<commit>/ → blobs}."""
    home = tmp_path_factory.mktemp("hf-home")
    repo = home / "hub" / "models--acme--tiny-llama"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for file in tiny_dir.iterdir():
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        blob = repo / "blobs" / digest
        shutil.copy(file, blob)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / file.name)
    return home


def env_for(home):
    return cli_env(HF_HOME=str(home), HF_HUB_OFFLINE="1")


def test_inspect_hub_id_from_cache(hf_home, tiny_dir):
    run = run_subprocess(["inspect", "acme/tiny-llama", "--only", "config,checkpoint", "--json"], env=env_for(hf_home))
    assert run.code == 0, run.stderr
    data = run.json()
    assert data["path"].endswith(f"models--acme--tiny-llama/snapshots/{COMMIT}")
    assert data["config"] == json.loads((tiny_dir / "config.json").read_text())
    assert data["checks"] == []
    pinned = run_subprocess(
        ["inspect", "acme/tiny-llama", "--revision", COMMIT, "--only", "config", "--json"], env=env_for(hf_home)
    )
    assert pinned.code == 0 and pinned.json()["path"] == data["path"]


def test_generate_hub_id_from_cache(hf_home):
    run = run_subprocess(
        ["generate", "-m", "acme/tiny-llama", "hello", "-n", "3", "--greedy", "--json"], env=env_for(hf_home)
    )
    assert run.code == 0, run.stderr
    assert run.json()["model"]["path"].endswith(COMMIT)


def test_missing_hub_ids_are_clean_errors(hf_home):
    run = run_subprocess(["inspect", "acme/not-there"], env=env_for(hf_home))
    assert run.code == 1 and run.stdout == ""
    assert run.stderr.strip().splitlines() == [
        "llmcli: error: acme/not-there is not in the local Hugging Face cache (download it first, e.g. "
        "`hf download acme/not-there`, or give a local directory)"
    ]
    wrong_rev = run_subprocess(["inspect", "acme/tiny-llama", "--revision", "v9"], env=env_for(hf_home))
    assert wrong_rev.code == 1 and "acme/tiny-llama@v9 is not in the local Hugging Face cache" in wrong_rev.stderr


def test_snapshot_symlinks_may_not_leave_the_repo(hf_home, tmp_path):
    from llmcli.errors import LlmcliError
    from llmcli.modelfs.files import safe_child

    snapshot = hf_home / "hub" / "models--acme--tiny-llama" / "snapshots" / COMMIT
    assert safe_child(snapshot, "config.json", snapshot).name == "config.json"
    outside = tmp_path / "evil.safetensors"
    outside.write_bytes(b"x")
    link = snapshot / "evil.safetensors"
    link.symlink_to(outside)
    try:
        with pytest.raises(LlmcliError, match="through a symlink"):
            safe_child(snapshot, "evil.safetensors", snapshot)
    finally:
        link.unlink()


def test_a_snapshots_weight_file_is_known_by_its_blobs_lfs_sha256_without_reading_it(tmp_path):
    from llmcli.modelfs.identity import weights_sha256

    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshots" / "abc123"
    blobs.mkdir()
    snapshot.mkdir(parents=True)
    oid = "ab" * 32
    (blobs / oid).write_bytes(b"not what the name says")  # the name is trusted: the Hub computed it
    (snapshot / "model.safetensors").symlink_to(f"../../blobs/{oid}")
    assert weights_sha256(snapshot / "model.safetensors") == oid
    plain = tmp_path / "model.safetensors"
    plain.write_bytes(b"weights")
    assert weights_sha256(plain) == hashlib.sha256(b"weights").hexdigest()
