"""TRL's own RewardTrainer evaluation of a reward model on a pairs file, in float32: the peer that `llmcli
reward`'s figures must equal (tests/analysis/test_reward.py runs it where TRL is installed).

    .venv/bin/python benchmarks/reward_trl.py REWARD_MODEL_DIR pairs.jsonl   # prints evaluate()'s dict

TRL stays out of CI's install: `pip install trl` where you measure. The whole file is one evaluation batch, so
that TRL's per-batch means are the means over all pairs.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path


def main() -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    model_dir, pairs = sys.argv[1:3]
    rows = [json.loads(line) for line in Path(pairs).read_text().splitlines() if line.strip()]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)
    args = RewardConfig(output_dir=tempfile.mkdtemp(), bf16=False, use_cpu=True, per_device_eval_batch_size=len(rows),
                        report_to=[], max_length=None)  # fmt: skip
    data = Dataset.from_list(rows)
    trainer = RewardTrainer(model=model, args=args, train_dataset=data, eval_dataset=data, processing_class=tokenizer)
    print(json.dumps(trainer.evaluate()))


if __name__ == "__main__":
    main()
