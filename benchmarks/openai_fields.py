"""What an OpenAI-compatible server does with the fields real clients send: each probe is one request through
the official `openai` client, and its outcome is recorded (what came back, or the error in the server's words).

    .venv/bin/python benchmarks/openai_fields.py --llmcli           # starts llmcli serve on the default model
    .venv/bin/python benchmarks/openai_fields.py --vllm             # starts vLLM (scripts/setup-vllm.sh) on it
    ... --out docs/measurements/openai-fields-vllm.json

docs/openai-api.md's table is drawn from these records. Greedy decoding throughout; nothing is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather", "parameters": CITY}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind: str, model: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    if kind == "vllm":
        args = [str(ROOT / ".venv-vllm/bin/python"), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
                "--dtype", "float32", "--max-model-len", "2048", "--port", str(port), "--enable-auto-tool-choice",
                "--tool-call-parser", "hermes", "--served-model-name", "default"]  # fmt: skip
        env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1")
    else:
        args = [sys.executable, "-m", "llmcli", "serve", "--port", str(port), "--dtype", "float32"]
        env = dict(os.environ)
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(450):
        try:
            if httpx.get(url + "/v1/models", timeout=5).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(2)
    proc.kill()
    raise SystemExit(f"{kind} did not start")


def probes(api: Any) -> dict[str, Any]:
    chat = {"model": "default", "max_tokens": 24, "temperature": 0}
    named = {"type": "function", "function": {"name": "get_weather"}}

    def message(**extra: Any) -> Any:
        return api.chat.completions.create(**chat, **extra).choices[0].message

    def calls(m: Any) -> Any:
        return [(c.function.name, c.function.arguments) for c in m.tool_calls or []] or {"content": m.content}

    def streamed(**extra: Any) -> dict[str, Any]:
        pieces = list(api.chat.completions.create(**{**chat, **extra}, stream=True))
        indexes = sorted({c.index for p in pieces for c in p.choices})
        logprobs = sum(len(c.logprobs.content or []) for p in pieces for c in p.choices if c.logprobs)
        return {"chunks": len(pieces), "choice_indexes": indexes, "logprob_entries": logprobs,
                "usage_chunk": pieces[-1].usage is not None and not pieces[-1].choices}  # fmt: skip

    parts = [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]
    return {
        "content parts": lambda: message(messages=[{"role": "user", "content": parts}]).content,
        "developer role": lambda: message(messages=[{"role": "developer", "content": "Be brief."}, *ASK]).content,
        "name": lambda: message(messages=[{"role": "user", "name": "ann", "content": "Hi"}]).content,
        "image part": lambda: (
            message(
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}],
                    }
                ]
            ).content
        ),  # fmt: skip
        "tools, tool_choice auto": lambda: calls(message(messages=ASK, tools=[WEATHER])),
        "tools, tool_choice required": lambda: calls(message(messages=ASK, tools=[WEATHER], tool_choice="required")),
        "tools, a named function": lambda: calls(message(messages=ASK, tools=[WEATHER], tool_choice=named)),
        "frequency and presence penalty": lambda: (
            message(messages=ASK, frequency_penalty=1.0, presence_penalty=0.5).content
        ),  # fmt: skip
        "logit_bias": lambda: message(messages=ASK, logit_bias={"504": -100}).content,
        "echo": lambda: (
            api.completions.create(
                model="default", prompt="The capital of France", max_tokens=4, temperature=0, echo=True
            )
            .choices[0]
            .text
        ),  # fmt: skip
        "stream with logprobs": lambda: streamed(messages=ASK, logprobs=True, top_logprobs=2),
        "stream with n = 2": lambda: streamed(messages=ASK, n=2, temperature=0.8, seed=1),
        "stream_options.include_usage": lambda: streamed(messages=ASK, stream_options={"include_usage": True}),
        "responses.create": lambda: (
            api.responses.create(model="default", input="Say hi.", max_output_tokens=12, temperature=0).output_text
        ),  # fmt: skip
        "responses.create with a function tool": lambda: [
            (o.type, getattr(o, "name", None), getattr(o, "arguments", None))
            for o in api.responses.create(
                model="default",
                input="What is the weather in Paris?",
                max_output_tokens=40,
                tools=[{"type": "function", **WEATHER["function"]}],
                tool_choice="required",
            ).output
        ],  # fmt: skip
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--llmcli", action="store_const", dest="kind", const="llmcli")
    group.add_argument("--vllm", action="store_const", dest="kind", const="vllm")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from openai import OpenAI

    from llmcli.modelfs.default_model import default_gguf, ensure_converted

    proc, url = start(args.kind, ensure_converted(default_gguf()))
    api = OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
    record: dict[str, Any] = {}
    try:
        for name, probe in probes(api).items():
            try:
                record[name] = {"ok": True, "answer": probe()}
            except Exception as exc:  # noqa: BLE001 - what the server said is the finding
                record[name] = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            print(f"{name}: {json.dumps(record[name], ensure_ascii=False)[:200]}", file=sys.stderr)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    text = json.dumps({"server": args.kind, "model": "SmolLM2-135M-Instruct (float32)", "probes": record}, indent=1,
                      ensure_ascii=False)  # fmt: skip
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
