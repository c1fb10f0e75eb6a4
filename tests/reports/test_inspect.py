"""`llmcli inspect` on real tiny checkpoints, the seed's Qwen2.5-7B config and a sparse full-size 7B."""

from __future__ import annotations

import json
import math

import pytest

from tests.helpers import DATA, PEAK_RSS_KIB, assert_clean_error, fresh_process, run_cli, run_subprocess

QWEN_TOTAL = 7_615_616_512
QWEN_EMBED = 2 * 152064 * 3584


def inspect_json(args, capsys, monkeypatch):
    run = run_cli(["inspect", *args, "--json"], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    return run.json()


def test_qwen_config_only_counts_match_published_figures(qwen_config_dir, capsys, monkeypatch):
    data = inspect_json([str(qwen_config_dir)], capsys, monkeypatch)
    params = data["parameters"]
    assert params["total"] == QWEN_TOTAL
    assert params["embedding"] == QWEN_EMBED
    assert params["non_embedding"] == QWEN_TOTAL - QWEN_EMBED
    assert round(params["non_embedding"] / 1e9, 2) == 6.53
    assert params["source"] == "architecture"
    assert params["by_dtype"] == {"bfloat16": QWEN_TOTAL}
    assert data["config"]["num_key_value_heads"] == 4
    assert data["memory"]["kv_cache"]["bytes_per_token"] == 56 * 1024
    assert data["memory"]["weights_bytes"]["bfloat16"] == 2 * QWEN_TOTAL
    assert data["checkpoint"]["format"] == "none"
    assert data["shards"] == []
    assert data["checks"] == []


def test_qwen_config_explained(qwen_config_dir, capsys, monkeypatch):
    run = run_cli(["inspect", str(qwen_config_dir), "--only", "config"], capsys, monkeypatch)
    assert run.code == 0
    golden = (DATA / "golden" / "qwen7b-config.txt").read_text()
    assert run.stdout == golden.replace("{DIR}", str(qwen_config_dir))


def test_qwen_module_tree(qwen_config_dir, capsys, monkeypatch):
    data = inspect_json([str(qwen_config_dir), "--only", "modules"], capsys, monkeypatch)
    tree = data["modules"]
    assert tree["class"] == "Qwen2ForCausalLM" and tree["parameters"] == QWEN_TOTAL
    model = tree["children"][0]
    block = [c for c in model["children"] if c["name"].startswith("layers")][0]
    assert block["name"] == "layers.0–27" and block["repeat"] == 28 and block["class"] == "Qwen2DecoderLayer"
    attn = {c["name"]: c for c in block["children"][0]["children"]}
    assert attn["k_proj"]["detail"] == "3584→512, bias"
    assert attn["o_proj"]["detail"] == "3584→3584, no bias"
    run = run_cli(["inspect", str(qwen_config_dir), "--only", "modules", "--depth", "2"], capsys, monkeypatch)
    assert "layers.0–27 (Qwen2DecoderLayer) × 28" in run.stdout
    assert "q_proj" not in run.stdout


def test_tiny_sharded_checkpoint(tiny_dir, capsys, monkeypatch):
    from safetensors import safe_open

    data = inspect_json([str(tiny_dir), "--tensors"], capsys, monkeypatch)
    assert data["checks"] == []
    assert len(data["shards"]) >= 2
    numel = 0
    for shard in data["shards"]:
        with safe_open(str(tiny_dir / shard["file"]), "np") as fh:
            numel += sum(math.prod(fh.get_slice(k).get_shape()) for k in fh.keys())
    assert data["checkpoint"]["parameters"] == numel
    # Tied: lm_head is not stored, and the architecture's total counts the shared matrix once.
    assert data["parameters"]["total"] == numel
    assert data["parameters"]["tied"] == [["model.embed_tokens.weight", "lm_head.weight"]]
    assert data["checkpoint"]["index_total_size"] == data["checkpoint"]["tensor_bytes"]
    assert {t["name"] for t in data["tensors"]} == set(
        json.loads((tiny_dir / "model.safetensors.index.json").read_text())["weight_map"]
    )
    lm_head = [c for c in data["modules"]["children"] if c["name"] == "lm_head"][0]
    assert lm_head["parameters"] == 0 and "tied to model.embed_tokens.weight" in lm_head["tied"][0]


def test_tiny_untied_counts_lm_head(tiny_untied_single, capsys, monkeypatch):
    data = inspect_json([str(tiny_untied_single)], capsys, monkeypatch)
    vocab, hidden = data["config"]["vocab_size"], data["config"]["hidden_size"]
    assert data["parameters"]["embedding"] == 2 * vocab * hidden
    assert data["parameters"]["total"] == data["checkpoint"]["parameters"]
    assert [s["file"] for s in data["shards"]] == ["model.safetensors"]


def test_checks_find_index_problems(tiny_copy, capsys, monkeypatch):
    index_path = tiny_copy / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    first_shard = sorted(set(index["weight_map"].values()))[0]
    index["weight_map"]["model.ghost.weight"] = first_shard
    dropped = sorted(index["weight_map"])[0]
    del index["weight_map"][dropped]
    index["metadata"]["total_size"] += 1
    index_path.write_text(json.dumps(index))
    (tiny_copy / "stray.safetensors").write_bytes((tiny_copy / first_shard).read_bytes())
    data = inspect_json([str(tiny_copy)], capsys, monkeypatch)
    checks = "\n".join(data["checks"])
    assert "does not hold: model.ghost.weight" in checks
    assert f"the index does not name: {dropped}" in checks
    assert "total_size" in checks
    assert "stray.safetensors" in checks
    assert "architecture does not use" not in checks


def test_architecture_check_finds_missing_and_unused(tiny_untied_single, tmp_path, capsys, monkeypatch):
    import shutil

    from safetensors.numpy import load_file, save_file

    dst = tmp_path / "m"
    shutil.copytree(tiny_untied_single, dst)
    tensors = load_file(str(dst / "model.safetensors"))
    tensors.pop("model.norm.weight")
    tensors["model.extra.weight"] = tensors["lm_head.weight"][:2]
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    data = inspect_json([str(dst)], capsys, monkeypatch)
    checks = "\n".join(data["checks"])
    assert "lacks 1 parameter(s) the architecture expects: model.norm.weight" in checks
    assert "does not use: model.extra.weight" in checks


@pytest.mark.parametrize(
    "damage,needle",
    [
        (lambda d: (d / "config.json").write_text("{not json"), "config.json: is not valid JSON"),
        (lambda d: (d / "config.json").write_text("[1, 2]"), "must be a JSON object"),
        (lambda d: (d / "config.json").write_bytes(b'{"a": "\xff"}'), "not UTF-8"),
        (lambda d: (d / "config.json").write_text("<!DOCTYPE html><html>404</html>"), "HTML"),
        (lambda d: (d / "model.safetensors.index.json").write_text('{"weight_map": []}'), "weight_map"),
        (
            lambda d: (d / "model.safetensors.index.json").write_text('{"weight_map": {"a": "../x.safetensors"}}'),
            "outside the model directory",
        ),
        (
            lambda d: (d / "model.safetensors.index.json").write_text('{"weight_map": {"a": "/etc/passwd"}}'),
            "outside the model directory",
        ),
        (
            lambda d: (d / "model.safetensors.index.json").write_text('{"weight_map": {"a": "gone.safetensors"}}'),
            "do not exist: gone.safetensors",
        ),
    ],
)
def test_bad_directories_give_one_line_errors(tiny_copy, damage, needle, capsys, monkeypatch):
    damage(tiny_copy)
    run = run_cli(["inspect", str(tiny_copy)], capsys, monkeypatch)
    assert_clean_error(run, 1, needle)


def test_shard_that_is_not_safetensors(tiny_copy, capsys, monkeypatch):
    shard = sorted(tiny_copy.glob("*.safetensors"))[0]
    shard.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    run = run_cli(["inspect", str(tiny_copy), "--only", "checkpoint"], capsys, monkeypatch)
    assert_clean_error(run, 1, shard.name, "git lfs pull")


def test_symlinked_shard_escaping_is_refused(tiny_copy, tmp_path, capsys, monkeypatch):
    shard = sorted(tiny_copy.glob("*.safetensors"))[0]
    outside = tmp_path / "outside.safetensors"
    shard.rename(outside)
    shard.symlink_to(outside)
    run = run_cli(["inspect", str(tiny_copy), "--only", "checkpoint"], capsys, monkeypatch)
    assert_clean_error(run, 1, "through a symlink")


def test_paths_that_are_not_models(tmp_path, capsys, monkeypatch):
    assert_clean_error(run_cli(["inspect", str(tmp_path / "nope")], capsys, monkeypatch), 1, "no such file")
    assert_clean_error(run_cli(["inspect", str(tmp_path)], capsys, monkeypatch), 1, "directory is empty")
    (tmp_path / "notes.txt").write_text("hi")
    assert_clean_error(run_cli(["inspect", str(tmp_path / "notes.txt")], capsys, monkeypatch), 1, "is a file")
    (tmp_path / "x.gguf").write_bytes(b"NOTGGUF")
    assert_clean_error(run_cli(["inspect", str(tmp_path / "x.gguf")], capsys, monkeypatch), 1, "x.gguf")


def test_usage_errors_exit_2(qwen_config_dir, capsys, monkeypatch):
    run = run_cli(["inspect", str(qwen_config_dir), "--only", "bogus"], capsys, monkeypatch)
    assert_clean_error(run, 2, "--only")
    run = run_cli(["inspect"], capsys, monkeypatch)
    assert run.code == 2 and "Traceback" not in run.stderr


def test_unknown_architecture_falls_back_to_headers(tiny_copy, capsys, monkeypatch):
    cfg = json.loads((tiny_copy / "config.json").read_text())
    cfg["model_type"] = "notamodel"
    cfg["architectures"] = ["NotAModelForCausalLM"]
    (tiny_copy / "config.json").write_text(json.dumps(cfg))
    data = inspect_json([str(tiny_copy)], capsys, monkeypatch)
    assert data["parameters"]["source"] == "checkpoint"
    assert data["parameters"]["total"] == data["checkpoint"]["parameters"]
    assert any("architecture not built" in c for c in data["checks"])


def test_auto_map_is_never_run(tiny_copy, capsys, monkeypatch):
    sentinel = tiny_copy / "PWNED"
    (tiny_copy / "evil.py").write_text(f"open({str(sentinel)!r}, 'w').write('x')\n")
    cfg = json.loads((tiny_copy / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (tiny_copy / "config.json").write_text(json.dumps(cfg))
    data = inspect_json([str(tiny_copy)], capsys, monkeypatch)
    assert any("custom code" in c for c in data["checks"])
    assert not sentinel.exists()


def test_plain_output_has_no_escape_codes_and_rich_renders(tiny_dir, capsys, monkeypatch):
    run = run_cli(["inspect", str(tiny_dir)], capsys, monkeypatch)
    assert run.code == 0 and "\x1b[" not in run.stdout
    for title in (
        "== Config",
        "== Tokenizer ==",
        "== Checkpoint",
        "== Parameters",
        "== Modules ==",
        "== Memory ==",
        "== Checks ==",
    ):
        assert title in run.stdout
    monkeypatch.setenv("LLMCLI_OUTPUT", "rich")
    rich = run_cli(["inspect", str(tiny_dir)], capsys, monkeypatch)
    assert rich.code == 0 and "Modules" in rich.stdout and "╭" in rich.stdout


def test_torch_free_sections_do_not_import_torch(sparse_qwen7b):
    args = ["inspect", str(sparse_qwen7b), "--only", "config,generation,tokenizer,checkpoint", "--json"]
    out, torch_loaded = fresh_process(args, "'torch' in sys.modules", timeout=120)
    assert torch_loaded == "False"
    data = json.loads(out)
    assert data["checkpoint"]["parameters"] == QWEN_TOTAL


def test_sparse_7b_reads_only_headers(sparse_qwen7b):
    files = sorted(sparse_qwen7b.glob("*.safetensors"))
    assert len(files) == 4
    apparent = sum(f.stat().st_size for f in files)
    on_disk = sum(f.stat().st_blocks * 512 for f in files)
    assert apparent > 15_000_000_000 and on_disk < 50_000_000
    index = json.loads((sparse_qwen7b / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == 15_231_233_024
    out, rss = fresh_process(["inspect", str(sparse_qwen7b), "--json"], PEAK_RSS_KIB)
    data = json.loads(out)
    assert data["parameters"]["total"] == QWEN_TOTAL
    assert data["checkpoint"]["parameters"] == QWEN_TOTAL
    assert data["checkpoint"]["tensor_bytes"] == 15_231_233_024
    assert data["checks"] == []
    peak_kib = int(rss)
    assert peak_kib < 2 * 1024 * 1024, f"peak RSS {peak_kib} KiB: weights must not be read"


def test_inspect_gguf_default(capsys, monkeypatch):
    from llmcli.modelfs.default_model import default_gguf

    data = inspect_json([str(default_gguf())], capsys, monkeypatch)
    assert data["format"] == "gguf" and data["architecture"] == "llama"
    assert data["parameters"]["total"] == 134_515_008
    assert set(data["quantization"]) == {"F32", "Q4_1", "Q8_0"}
    assert data["tokenizer"]["chat_template"] is True
    assert data["metadata"]["llama.context_length"] == 8192


def test_help_is_fast_path_without_torch():
    out, heavy = fresh_process(["inspect", "--help"], "'torch' in sys.modules or 'transformers' in sys.modules", 60)
    assert heavy == "False"
    assert "--only" in out


def test_python_dash_m_and_version():
    run = run_subprocess(["--version"])
    assert run.code == 0 and run.stdout.startswith("llmcli ")


def test_memory_verdict_and_context(qwen_config_dir, capsys, monkeypatch):
    data = inspect_json(
        [str(qwen_config_dir), "--only", "memory", "--context", "1000", "--batch", "2", "--device", "cpu"],
        capsys,
        monkeypatch,
    )
    kv = data["memory"]["kv_cache"]
    assert kv["bytes"] == 57344 * 1000 * 2
    verdict = data["memory"]["verdict"]
    assert verdict["needed_bytes"] == 2 * QWEN_TOTAL + kv["bytes"]
    assert verdict["fits"] == (verdict["needed_bytes"] <= data["memory"]["device"]["free_bytes"])


def test_memory_lines_say_byte_for_one(qwen_config_dir, capsys, monkeypatch):
    run = run_cli(["inspect", str(qwen_config_dir), "--only", "memory", "--device", "cpu"], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    assert "1 byte per parameter" in run.stdout and "1 bytes" not in run.stdout
    assert "2 bytes per parameter" in run.stdout


def test_placement_proposal_spills_what_a_budget_cannot_hold_to_disk(qwen_config_dir, capsys, monkeypatch):
    args = [str(qwen_config_dir), "--only", "memory", "--max-memory", "cpu=6GiB"]
    placement = inspect_json(args, capsys, monkeypatch)["memory"]["placement"]
    devices = {d["device"]: d for d in placement["devices"]}
    assert list(devices) == ["cpu", "disk"] and placement["max_memory_bytes"] == {"cpu": 6 * 2**30}
    assert devices["cpu"]["bytes"] <= 6 * 2**30 < devices["cpu"]["bytes"] + devices["disk"]["bytes"]
    assert abs(sum(d["bytes"] for d in devices.values()) - 2 * QWEN_TOTAL) < 0.001 * QWEN_TOTAL  # bf16
    assert "model.embed_tokens" in devices["cpu"]["modules"] and "lm_head" in devices["disk"]["modules"]
    assert any(m.startswith("model.layers.0-") for m in devices["cpu"]["modules"])
    verdict = inspect_json(args, capsys, monkeypatch)["memory"]["verdict"]
    assert verdict["within"] == "--max-memory" and verdict["fits"] is False  # 15 GB of weights, a 6 GiB budget
    roomy = inspect_json([*args[:-1], "cpu=1TiB"], capsys, monkeypatch)["memory"]["verdict"]
    assert roomy["fits"] is True and roomy["within"] == "--max-memory"
    shown = run_cli(["inspect", *args], capsys, monkeypatch)
    assert "--device-map auto would place" in shown.stdout and "read back at every step" in shown.stdout
    assert "available)::" not in shown.stdout and "does not fit within --max-memory" in shown.stdout
