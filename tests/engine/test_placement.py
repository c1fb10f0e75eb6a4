"""Beyond one device in one process: --device-map with a budget too small for the default model puts most
of its layers on disk, and the greedy tokens stay those of the model on one device."""

from __future__ import annotations

import pytest

from tests.helpers import assert_clean_error, run_cli


def greedy(model_dir, extra, capsys, monkeypatch):
    args = ["generate", "-m", str(model_dir), "--dtype", "float32", "--greedy", "-n", "12", "hi", "--json", *extra]
    run = run_cli(args, capsys, monkeypatch)
    assert run.code == 0, run.stderr
    return run.json()


def test_layers_offloaded_to_disk_give_the_same_greedy_tokens(default_model_dir, tmp_path, capsys, monkeypatch):
    alone = greedy(default_model_dir, [], capsys, monkeypatch)
    spread = ["--device-map", "auto", "--max-memory", "cpu=150MB", "--offload-dir", str(tmp_path / "offload")]
    placed = greedy(default_model_dir, spread, capsys, monkeypatch)
    assert placed["outputs"][0]["token_ids"] == alone["outputs"][0]["token_ids"]
    where = placed["model"]["placement"]
    assert where.get("disk", 0) > where.get("cpu", 0) > 0  # most layers on disk (read from the safetensors)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--max-memory", "cpu=1GiB"], "--max-memory goes with --device-map"),
        (["--device-map", "auto", "--max-memory", "gpu=1GiB"], "'gpu' is not cpu, mps or cuda:N"),
        (["--device-map", "auto", "--max-memory", "cpu=lots"], "'lots' is not an amount"),
        (["--device-map", "auto", "--device", "cpu"], "drop --device"),
        (["--device-map", "everywhere"], "--device-map"),
    ],
)
def test_placement_usage_errors(args, needle, capsys, monkeypatch):
    assert_clean_error(run_cli(["generate", *args, "hi"], capsys, monkeypatch), 2, needle)
