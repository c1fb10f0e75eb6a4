"""TRL's own DPO evaluation of a policy against its reference on a pairs file, in float32: the peer that
`llmcli dpo`'s figures must equal (tests/analysis/test_dpo.py runs it where TRL is installed).

    .venv/bin/python benchmarks/dpo_trl.py POLICY_DIR REF_DIR pairs.jsonl BETA LOSS   # prints evaluate()'s dict

TRL stays out of CI's install: `pip install trl` where you measure. DPOConfig's bf16 default (True, even on a
CPU) is turned off, else both passes run under bfloat16 autocast and the rewards of two identical models are
not 0; the whole file is one evaluation batch, so that TRL's per-batch means are the means over all pairs.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path


def main() -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    policy_dir, ref_dir, pairs, beta, loss = sys.argv[1:6]
    rows = [json.loads(line) for line in Path(pairs).read_text().splitlines() if line.strip()]
    tokenizer = AutoTokenizer.from_pretrained(ref_dir)
    policy = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(ref_dir, dtype=torch.float32)
    args = DPOConfig(output_dir=tempfile.mkdtemp(), beta=float(beta), loss_type=[loss], bf16=False, use_cpu=True,
                     per_device_eval_batch_size=len(rows), report_to=[], max_length=None)  # fmt: skip
    data = Dataset.from_list(rows)
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=data, eval_dataset=data,
                         processing_class=tokenizer)  # fmt: skip
    print(json.dumps(trainer.evaluate()))


if __name__ == "__main__":
    main()
