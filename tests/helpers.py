"""Shared test helpers: run the CLI in-process or as a real subprocess, and build tiny models."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
QWEN7B_CONFIG_DIR = DATA / "qwen2.5-7b"

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)

    def jsonl(self):
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


def run_cli(args: list[str], capsys, monkeypatch, stdin: bytes | None = None) -> Run:
    """Run `llmcli args` in this process through the real entry point (error mapping included)."""
    from llmcli.cli import main

    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    else:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b""), encoding="utf-8"))
    capsys.readouterr()
    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return Run(code, out, err)


def default_sigint() -> None:
    """For Ctrl-C tests: a child of a background job inherits SIGINT ignored, and Python then installs no
    handler; give the child the default disposition, as a terminal would."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("LLMCLI_MODEL", None)
    env.update(extra)
    return env


def run_subprocess(args: list[str], stdin: bytes | None = None, env: dict | None = None, timeout: float = 300) -> Run:
    proc = subprocess.run(
        [sys.executable, "-m", "llmcli", *args],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        env=env or cli_env(),
        timeout=timeout,
        cwd=ROOT,
    )
    return Run(proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))


# This process's own peak resident memory in KiB. Not getrusage's ru_maxrss: Linux carries the parent's
# peak into a child across fork and exec, so a child of a large pytest process reports pytest's peak.
PEAK_RSS_KIB = "int([line for line in open('/proc/self/status') if line.startswith('VmHWM')][0].split()[1])"


def fresh_process(args: list[str], probe: str, timeout: float = 300) -> tuple[str, str]:
    """Run `llmcli ARGS` in a new interpreter; return its stdout and the value of `probe` evaluated there after."""
    code = (
        "import resource, sys; from llmcli.cli import main\n"
        "try:\n    main(sys.argv[1:])\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        f"sys.stderr.write('PROBE=%s' % ({probe}))"
    )
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, cwd=ROOT, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.decode(), proc.stderr.decode().rsplit("PROBE=", 1)[1]


def assert_clean_error(run: Run, code: int, *needles: str) -> None:
    """One non-empty line on stderr, the expected exit code, no traceback, nothing on stdout."""
    assert run.code == code, (run.code, run.stderr, run.stdout)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert run.stdout == ""
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def build_tokenizer(path: Path):
    """A small byte-level BPE tokenizer with chat special tokens, trained offline in a blink."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [
        "The capital of France is Paris. The capital of Italy is Rome.",
        "Hello world! What is the capital of Germany? Berlin is.",
        "Tokens become ids, ids become vectors, and the model predicts the next token.",
    ] * 20
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(path))
    return fast


def build_tiny_model(path: Path, tied: bool = True, shard: str | None = "120KB", seed: int = 0):
    """A tiny Llama with random weights and a real tokenizer, saved as (sharded) safetensors."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer(path)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=tied,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(str(path), **kwargs)
    return model, tok
