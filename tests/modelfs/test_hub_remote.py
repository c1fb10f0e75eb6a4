"""Hub models not in the cache, with the Hub reachable: huggingface_hub is replaced by a fake serving the tiny
model, so nothing touches the network. inspect must never download a weight file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import assert_clean_error, run_cli


class FakeHub:
    def __init__(self, source: Path, cache: Path):
        self.source = source
        self.cache = cache
        self.downloaded: list[str] = []

    def list_repo_files(self, repo_id, revision=None, **_):
        self._check(repo_id)
        return sorted(p.name for p in self.source.iterdir())

    def hf_hub_download(self, repo_id, filename, revision=None, **_):
        self._check(repo_id)
        if filename.endswith(".safetensors"):
            raise AssertionError("inspect downloaded a weight file")
        self.downloaded.append(filename)
        self.cache.mkdir(parents=True, exist_ok=True)
        return str(shutil.copy(self.source / filename, self.cache / filename))

    def get_safetensors_metadata(self, repo_id, revision=None, **_):
        from huggingface_hub.utils import SafetensorsFileMetadata, SafetensorsRepoMetadata
        from huggingface_hub.utils import TensorInfo as HubTensor

        from llmcli.modelfs.checkpoint import read_checkpoint

        ckpt = read_checkpoint(self.source)  # what the remote header reads would return
        files = {}
        for t in ckpt.tensors.values():
            files.setdefault(t.shard, {})[t.name] = HubTensor(dtype=t.dtype, shape=t.shape, data_offsets=(0, t.nbytes))
        weight_map = {t.name: t.shard for t in ckpt.tensors.values()}
        return SafetensorsRepoMetadata(
            metadata=None,
            sharded=len(files) > 1,
            weight_map=weight_map,
            files_metadata={f: SafetensorsFileMetadata(metadata={}, tensors=ts) for f, ts in files.items()},
        )

    def snapshot_download(self, repo_id, revision=None, allow_patterns=None, local_files_only=False, **_):
        if local_files_only:
            from huggingface_hub.errors import LocalEntryNotFoundError

            raise LocalEntryNotFoundError("not cached")
        self._check(repo_id)
        target = self.cache / "full"
        shutil.copytree(self.source, target, dirs_exist_ok=True)
        return str(target)

    def _check(self, repo_id):
        if repo_id != "acme/remote-tiny":
            import httpx2 as httpx
            from huggingface_hub.errors import RepositoryNotFoundError

            response = httpx.Response(404, request=httpx.Request("GET", "http://127.0.0.1/api/models"))
            raise RepositoryNotFoundError(f"404 {repo_id}", response=response)


@pytest.fixture
def fake_hub(tiny_dir, tmp_path, monkeypatch):
    import huggingface_hub

    hub = FakeHub(tiny_dir, tmp_path / "hub-cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub.hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub.snapshot_download)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda self, *a, **k: hub.list_repo_files(*a, **k))
    monkeypatch.setattr(
        huggingface_hub.HfApi, "get_safetensors_metadata", lambda self, *a, **k: hub.get_safetensors_metadata(*a, **k)
    )
    return hub


def test_inspect_reads_headers_remotely_never_weights(fake_hub, tiny_dir, capsys, monkeypatch):
    run = run_cli(["inspect", "acme/remote-tiny", "--json"], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    data = run.json()
    local = run_cli(["inspect", str(tiny_dir), "--json"], capsys, monkeypatch).json()
    assert data["parameters"]["total"] == local["parameters"]["total"]
    assert data["checkpoint"]["parameters"] == local["checkpoint"]["parameters"]
    assert data["checkpoint"]["index_total_size"] == local["checkpoint"]["index_total_size"]
    assert [s["file"] for s in data["shards"]] == [s["file"] for s in local["shards"]]
    assert data["checks"] == []
    assert "config.json" in fake_hub.downloaded
    assert not any(name.endswith(".safetensors") for name in fake_hub.downloaded)


def test_generate_downloads_then_runs(fake_hub, capsys, monkeypatch):
    run = run_cli(["generate", "-m", "acme/remote-tiny", "hello", "-n", "3", "--greedy", "--json"], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    assert run.json()["model"]["path"].endswith("full")


def test_unknown_repo_is_a_clean_error(fake_hub, capsys, monkeypatch):
    run = run_cli(["inspect", "acme/missing"], capsys, monkeypatch)
    assert_clean_error(run, 1, "acme/missing: no such model on the Hub")
