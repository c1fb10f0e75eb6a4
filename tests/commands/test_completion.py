"""Shell completion: choices from the Enums, model directories and .gguf files, and no torch to get there."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import cli_env, fresh_process


def complete(words: str, cwd) -> list[str]:
    env = cli_env(COMP_WORDS=words, COMP_CWORD=str(len(words.split(" ")) - 1), _LLMCLI_COMPLETE="complete_bash")
    proc = subprocess.run(
        [sys.executable, "-c", "from llmcli.cli import main; main()"], env=env, cwd=cwd, capture_output=True
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.decode().split()


def test_choices_complete(tmp_path):
    assert complete("llmcli generate --attn ", tmp_path) == [
        "auto",
        "sdpa",
        "eager",
        "flash_attention_2",
        "flash_attention_3",
        "flex_attention",
    ]
    assert complete("llmcli chat --dtype b", tmp_path) == ["bfloat16"]
    assert complete("llmcli gen", tmp_path) == ["generate"]


def test_model_arguments_complete_directories_and_gguf_files(tmp_path):
    (tmp_path / "qwen").mkdir()
    (tmp_path / "qwen" / "config.json").write_text("{}")
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "adapter_config.json").write_text("{}")
    (tmp_path / "plain").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    (tmp_path / "notes.txt").write_text("x")
    assert complete("llmcli generate -m ", tmp_path) == ["lora/", "qwen/", "m.gguf", "plain/"]
    assert complete(f"llmcli inspect {tmp_path}/q", tmp_path) == [f"{tmp_path}/qwen/"]
    assert complete("llmcli diff m", tmp_path) == ["m.gguf"]


def test_completion_and_help_stay_torch_free():
    out, heavy = fresh_process(["--help"], "'torch' in sys.modules or 'transformers' in sys.modules", 60)
    assert heavy == "False" and "--install-completion" in out
