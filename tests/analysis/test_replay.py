"""Every --json result carries a replay block; `llmcli replay` reruns a generate record and says whether it
came out the same, and if not where, with both tokens' probabilities and what differs in the environment."""

from __future__ import annotations

import json
import shutil
import struct

from tests.helpers import assert_clean_error, run_cli


def record(model_dir, args, capsys, monkeypatch, path):
    run = run_cli(["generate", "-m", str(model_dir), "hello there", "--raw", "-n", "12", *args, "--json"],
                  capsys, monkeypatch)  # fmt: skip
    assert run.code == 0, run.stderr
    path.write_text(run.stdout)
    return run.json()


def replayed(path, capsys, monkeypatch, *extra):
    run = run_cli(["replay", str(path), *extra, "--json"], capsys, monkeypatch)
    return run.code, [json.loads(line) for line in run.stdout.splitlines() if line.strip()], run.stderr


def test_greedy_and_seeded_records_replay_identically(tiny_dir, tmp_path, capsys, monkeypatch):
    greedy = record(tiny_dir, ["--greedy"], capsys, monkeypatch, tmp_path / "greedy.json")
    env = greedy["replay"]
    assert env["model"]["files"]["config.json"] and env["batch"] == {"size": 1, "position": 0}
    assert env["dtype"] == "bfloat16" and env["versions"]["torch"] and env["device"]["cpu"]["model"]
    sampled = record(tiny_dir, ["-t", "0.9", "--seed", "7"], capsys, monkeypatch, tmp_path / "sampled.json")
    assert sampled["seed"] == 7
    for name in ("greedy.json", "sampled.json"):
        code, [data], _ = replayed(tmp_path / name, capsys, monkeypatch)
        assert code == 0 and data["identical"] and data["first_divergence"] is None
        assert data["environment_differences"] == []


def test_an_edited_token_is_the_first_divergence(tiny_dir, tmp_path, capsys, monkeypatch):
    data = record(tiny_dir, ["--greedy", "--min-new-tokens", "12"], capsys, monkeypatch, tmp_path / "r.json")
    ids = data["outputs"][0]["token_ids"]
    ids[5] = (ids[5] + 1) % 300
    (tmp_path / "edited.json").write_text(json.dumps(data))
    code, [found], stderr = replayed(tmp_path / "edited.json", capsys, monkeypatch)
    assert code == 1 and found["identical"] is False and found["first_divergence"] == 5
    assert found["recorded_token"]["token_id"] == ids[5] and found["new_token"]["token_id"] != ids[5]
    assert found["new_token"]["prob"] >= found["recorded_token"]["prob"] and found["margin"] >= 0
    assert "did not replay identically" in stderr
    # JSONL: each line replayed, the exit code says whether any differed
    (tmp_path / "both.jsonl").write_text((tmp_path / "r.json").read_text().strip() + "\n" + json.dumps(data) + "\n")
    code, results, _ = replayed(tmp_path / "both.jsonl", capsys, monkeypatch)
    assert code == 1 and [r["identical"] for r in results] == [True, False]
    assert results[0]["record"].endswith("both.jsonl:1")


def test_a_bf16_record_in_float32_names_the_dtype(default_model_dir, tmp_path, capsys, monkeypatch):
    run = run_cli(["generate", "-m", str(default_model_dir), "Write a short poem about the sea.", "--greedy",
                   "-n", "48", "--json"], capsys, monkeypatch)  # fmt: skip
    assert run.code == 0 and run.json()["replay"]["dtype"] == "bfloat16"
    (tmp_path / "bf16.json").write_text(run.stdout)
    code, [data], _ = replayed(tmp_path / "bf16.json", capsys, monkeypatch, "--dtype", "float32")
    assert {"what": "dtype", "recorded": "bfloat16", "now": "float32"} in data["environment_differences"]
    if data["identical"]:
        assert code == 0
    else:  # where the tokens part, the margin there explains it
        assert code == 1 and isinstance(data["margin"], float) and data["first_divergence"] >= 0


def test_a_changed_model_file_is_named(tiny_dir, tmp_path, capsys, monkeypatch):
    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    record(model, ["--greedy"], capsys, monkeypatch, tmp_path / "r.json")
    config = json.loads((model / "config.json").read_text())
    config["rope_theta"] = 12345.0
    (model / "config.json").write_text(json.dumps(config))
    run = run_cli(["replay", str(tmp_path / "r.json")], capsys, monkeypatch)
    assert_clean_error(run, 1, "not the recorded model: config.json (changed)", str(model))


def test_one_weight_changed_at_the_end_of_a_shard_is_named(tiny_untied_single, tmp_path, capsys, monkeypatch):
    """The identity covers the weights' values: one float rewritten in the last bytes of the file."""
    from llmcli.modelfs.memo import read_memo

    model = tmp_path / "model"
    shutil.copytree(tiny_untied_single, model)
    record(model, ["--greedy"], capsys, monkeypatch, tmp_path / "r.json")
    kept = json.loads((tmp_path / "r.json").read_text())["replay"]["model"]
    assert kept["kind"] == "sha256 of each file, weights whole" and "model.safetensors" in kept["files"]
    assert any(key.startswith(str((model / "model.safetensors").resolve())) for key in read_memo("file-sha256.json"))
    shard = model / "model.safetensors"
    data = bytearray(shard.read_bytes())
    data[-4:] = struct.pack("<f", struct.unpack("<f", bytes(data[-4:]))[0] + 0.5)
    shard.write_bytes(bytes(data))
    run = run_cli(["replay", str(tmp_path / "r.json")], capsys, monkeypatch)
    assert_clean_error(run, 1, "not the recorded model: model.safetensors (changed)", str(model))


def test_a_record_with_header_hashes_is_compared_by_headers(tiny_dir, tmp_path, capsys, monkeypatch):
    """Records made before weights were hashed whole still replay against an unchanged model."""
    from llmcli.modelfs.identity import identity

    record(tiny_dir, ["--greedy"], capsys, monkeypatch, tmp_path / "r.json")
    old = json.loads((tmp_path / "r.json").read_text())
    headers = identity(tiny_dir, headers_only=True)
    assert any(name.endswith(" (header)") for name in headers["files"])
    old["replay"]["model"] = {k: v for k, v in headers.items() if k != "kind"}
    (tmp_path / "old.json").write_text(json.dumps(old))
    code, [data], _ = replayed(tmp_path / "old.json", capsys, monkeypatch)
    assert code == 0 and data["identical"]


def test_chat_save_records_and_other_records(tiny_dir, tmp_path, capsys, monkeypatch):
    save = tmp_path / "chat.json"
    chat = run_cli(["chat", "-m", str(tiny_dir), "--greedy", "-n", "6"], capsys, monkeypatch,
                   stdin=f"hello\nand again\n/save {save}\n".encode())  # fmt: skip
    assert chat.code == 0, chat.stderr
    saved = json.loads(save.read_text())
    assert len(saved["records"]) == 2 and all("replay" in r for r in saved["records"])
    code, results, _ = replayed(save, capsys, monkeypatch)
    assert code == 0 and [r["identical"] for r in results] == [True, True]
    scored = run_cli(["score", "-m", str(tiny_dir), "hello there", "--json"], capsys, monkeypatch).json()
    assert scored["replay"]["model"]["digest"] == saved["records"][0]["replay"]["model"]["digest"]
    foreign = dict(saved["records"][0], replay={"engine": "vLLM 0.32.0", "server": "http://x"})
    (tmp_path / "far.json").write_text(json.dumps(foreign))
    assert_clean_error(run_cli(["replay", str(tmp_path / "far.json")], capsys, monkeypatch), 2, "came from vLLM")
    (tmp_path / "junk.json").write_text('{"hello": 1}')
    assert_clean_error(run_cli(["replay", str(tmp_path / "junk.json")], capsys, monkeypatch), 1, "not a generate")


def test_an_int4_record_replays_with_its_scheme_and_group(tiny_dir, tmp_path, capsys, monkeypatch):
    data = record(tiny_dir, ["--greedy", "--quantize", "int4", "--group-size", "64"], capsys, monkeypatch,
                  tmp_path / "int4.json")  # fmt: skip
    env = data["replay"]
    assert env["quantize"] == "int4" and env["quantization"]["group_size"] == 64
    assert env["quantization"]["quantized_layers"] == 14
    code, [again], _ = replayed(tmp_path / "int4.json", capsys, monkeypatch)
    assert code == 0 and again["identical"] and again["environment_differences"] == []
