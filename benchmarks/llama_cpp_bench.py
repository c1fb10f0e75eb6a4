"""llama.cpp (llama-cpp-python) on the default model's own GGUF: the same prompt length and greedy tokens."""

from __future__ import annotations

import argparse
import json
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompt-tokens", type=int, default=41)
    parser.add_argument("--gen-tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    from llama_cpp import Llama

    from llmcli.modelfs.default_model import default_gguf

    llm = Llama(model_path=str(default_gguf()), n_ctx=2048, verbose=False)
    filler = " the quick brown fox jumps over the lazy dog" * 40
    prompt = llm.tokenize(filler.encode())[: args.prompt_tokens]
    decode = []
    for _ in range(args.reps + 1):
        llm.reset()
        started = time.perf_counter()
        llm.eval(prompt)
        prefill_done = time.perf_counter()
        token = None
        for _ in range(args.gen_tokens):
            token = llm.sample(temp=0.0)
            llm.eval([token])
        ended = time.perf_counter()
        decode.append({"prefill_s": prefill_done - started, "decode_tok_s": args.gen_tokens / (ended - prefill_done)})
    json.dump({"gguf": str(default_gguf()), "runs": decode[1:]}, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
