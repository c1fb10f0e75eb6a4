"""TRL's own KTO evaluation of a policy against its reference on unpaired, labelled data, in float32: the peer
that `llmcli dpo --loss kto`'s figures must equal (tests/analysis/test_kto.py runs it where TRL is installed).

    .venv/bin/python benchmarks/kto_trl.py POLICY_DIR REF_DIR data.jsonl BETA [DESIRABLE UNDESIRABLE]

TRL stays out of CI's install: `pip install trl` where you measure. The whole file is one batch, for training
(whose size sets the rotation of completions that makes the KL estimate's mismatched pairs) and evaluation, so
that TRL's per-batch figures are the file's.
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
    from trl import KTOConfig, KTOTrainer

    policy_dir, ref_dir, data, beta, *weights = sys.argv[1:]
    desirable, undesirable = (float(w) for w in weights) if weights else (1.0, 1.0)
    rows = [json.loads(line) for line in Path(data).read_text().splitlines() if line.strip()]
    tokenizer = AutoTokenizer.from_pretrained(ref_dir)
    policy = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(ref_dir, dtype=torch.float32)
    args = KTOConfig(output_dir=tempfile.mkdtemp(), beta=float(beta), bf16=False, use_cpu=True, report_to=[],
                     per_device_train_batch_size=len(rows), per_device_eval_batch_size=len(rows), max_length=None,
                     desirable_weight=desirable, undesirable_weight=undesirable)  # fmt: skip
    dataset = Dataset.from_list(rows)
    trainer = KTOTrainer(model=policy, ref_model=reference, args=args, train_dataset=dataset, eval_dataset=dataset,
                         processing_class=tokenizer)  # fmt: skip
    print(json.dumps(trainer.evaluate()))


if __name__ == "__main__":
    main()
