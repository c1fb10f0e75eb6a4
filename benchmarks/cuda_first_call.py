"""Why a one-shot `llmcli generate` on CUDA decodes slower than a warmed-up bench: time each token of the
first and second generate() call in a fresh process, per attention setting.

    python benchmarks/cuda_first_call.py MODEL_DIR VARIANT     (VARIANT: sdpa, sdpa-no-cudnn, eager, math)
"""

from __future__ import annotations

import json
import sys
import time


class StepClock:
    def __init__(self, torch):
        self.torch, self.times, self.seen = torch, [], False

    def put(self, value):
        self.torch.cuda.synchronize()
        self.times.append(time.perf_counter())

    def end(self):
        pass


def main() -> int:
    path, variant = sys.argv[1], sys.argv[2]
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if variant == "sdpa-no-cudnn":
        torch.backends.cuda.enable_cudnn_sdp(False)
    if variant == "math":
        torch.backends.cuda.enable_cudnn_sdp(False)
        torch.backends.cuda.enable_flash_sdp(False)
        torch.backends.cuda.enable_mem_efficient_sdp(False)
    attn = "eager" if variant == "eager" else "sdpa"
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.bfloat16, device_map="cuda", attn_implementation=attn
    )
    ids = torch.tensor([tok("Say hello. " * 3)["input_ids"]], device="cuda")
    report = {"variant": variant, "prompt_tokens": ids.shape[1]}
    for call in ("first", "second", "third"):
        clock = StepClock(torch)
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=64,
                min_new_tokens=64,
                do_sample=False,
                pad_token_id=0,
                streamer=clock,
            )
        t = clock.times  # t[0]: prompt handed over, t[1]: first token, then one per step
        steps = [b - a for a, b in zip(t[1:], t[2:], strict=False)]
        report[call] = {
            "ttft_ms": round((t[1] - start) * 1000, 1),
            "decode_tok_s": round(len(steps) / (t[-1] - t[1]), 1),
            "step_ms_first5": [round(s * 1000, 1) for s in steps[:5]],
            "step_ms_median": round(sorted(steps)[len(steps) // 2] * 1000, 2),
            "step_ms_max": round(max(steps) * 1000, 1),
        }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
