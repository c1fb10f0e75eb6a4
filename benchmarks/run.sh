#!/usr/bin/env bash
# Reproduces docs/performance.md: llmcli against a bare transformers generate() (same process, same inputs),
# per dtype / quantization, single stream and a batch of 8, plus startup times; and llama.cpp on the same
# GGUF when llama_cpp is importable. Run it on an otherwise idle machine: ./benchmarks/run.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results}
mkdir -p "$OUT"
LLMCLI=${LLMCLI:-.venv/bin/llmcli}
PY=${PY:-.venv/bin/python}
P=${PROMPT_TOKENS:-41}
G=${GEN_TOKENS:-128}
REPS=${REPS:-3}

for variant in "bfloat16:none" "float32:none" "auto:int8"; do
    dtype=${variant%%:*}; quant=${variant##*:}
    echo "bench dtype=$dtype quantize=$quant" >&2
    "$LLMCLI" bench -p "$P" -g "$G" -b 1,8 -r "$REPS" --compare-raw --dtype "$dtype" --quantize "$quant" --json \
        > "$OUT/bench-$dtype-$quant.json"
done

"$PY" benchmarks/startup.py > "$OUT/startup.json"
if "$PY" -c "import llama_cpp" 2>/dev/null; then
    "$PY" benchmarks/llama_cpp_bench.py --prompt-tokens "$P" --gen-tokens "$G" > "$OUT/llama_cpp.json"
else
    echo "llama_cpp not importable: skipping the llama.cpp comparison" >&2
fi
"$PY" benchmarks/report.py "$OUT"
