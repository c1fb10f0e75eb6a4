#!/usr/bin/env bash
# CUDA figures for docs/performance.md: a Qwen2.5-7B-shaped model (the seed's config.json, random bf16
# weights built on the GPU, no download) through llmcli bench (eager and --compile, each against a bare
# generate()), llmcli generate --stats, and the decode ceiling (copy bandwidth ÷ weight bytes).
#   ./benchmarks/cuda.sh [OUT_DIR]   env: PY (python), TOKENIZER (dir with tokenizer.json; default: the
#   embedded model's), LAYERS (fewer layers for a dry run), MODEL_DIR (where the weights go), STEPS (a
#   space-separated subset of the step names below)
# Each step has its own time limit and its own files, so one failure does not cost the others.
set -u
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/cuda}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TQDM_DISABLE=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -z "${MODEL_DIR:-}" ]; then
    MODEL_DIR=/tmp/llmcli-qwen7b-random
    # tmpfs when it has room: writing and re-reading 15 GB should not measure the disk
    if [ "$(df --output=avail -k /dev/shm 2>/dev/null | tail -1)" -gt 20000000 ] 2>/dev/null; then
        MODEL_DIR=/dev/shm/llmcli-qwen7b-random
    fi
fi
TOKENIZER=${TOKENIZER:-$("$PY" -c 'from llmcli.modelfs.default_model import default_gguf, ensure_converted as e; print(e(default_gguf(), lambda s: None))')}
LLMCLI="$PY -m llmcli"
step() { # name limit_seconds command...
    local name=$1 limit=$2; shift 2
    [ -z "${STEPS:-}" ] || [[ " $STEPS " == *" $name "* ]] || return 0
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.json" 2> "$OUT/$name.err"
    echo "step $name: rc=$? $((SECONDS - t0)) s" | tee -a "$OUT/steps.txt" >&2
}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv > "$OUT/gpu.txt" 2>&1
DEVICE=cuda; [ -n "${LAYERS:-}" ] && ! "$PY" -c 'import torch,sys; sys.exit(not torch.cuda.is_available())' && DEVICE=cpu
step model 240 "$PY" benchmarks/random_model.py tests/data/qwen2.5-7b "$TOKENIZER" "$MODEL_DIR" --device $DEVICE \
    ${LAYERS:+--layers $LAYERS}
P=41 G=${GEN_TOKENS:-128}
step bench 200 $LLMCLI bench -m "$MODEL_DIR" -p $P -g $G -b 1,8 -r 3 --compare-raw --json
# One-shot runs, each a fresh process as a user runs it: --attn auto (the default), torch's own SDPA
# choice, eager; and a prompt of ~3,000 tokens (over attention.SHORT_PREFILL_TOKENS).
for attn in auto sdpa eager; do
    step generate-$attn 90 $LLMCLI generate -m "$MODEL_DIR" -n 64 --min-new-tokens 64 --stats --json --attn $attn \
        "Say hello."
done
"$PY" -c 'print("Say hello. " * 1000)' > "$OUT/long-prompt.txt"
for attn in auto eager; do
    step generate-long-$attn 90 $LLMCLI generate -m "$MODEL_DIR" -n 64 --min-new-tokens 64 --stats --json \
        --attn $attn --file "$OUT/long-prompt.txt"
done
rm -f "$OUT/long-prompt.txt"
step attn-flash 60 $LLMCLI generate -m "$MODEL_DIR" -n 4 --attn flash_attention_2 "Say hello."
step bench-compile 300 $LLMCLI bench -m "$MODEL_DIR" -p $P -g $G -b 1 -r 3 --compile --compare-raw --json
step inspect 60 $LLMCLI inspect "$MODEL_DIR" --json
"$PY" benchmarks/cuda_report.py "$OUT"
