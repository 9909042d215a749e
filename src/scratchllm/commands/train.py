"""``scratchllm pretrain``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from scratchllm.config import DataSpec, ModelSpec, TrainConfig


def pretrain(
    data: DataSpec,
    model: ModelSpec = ModelSpec(),
    train: TrainConfig = TrainConfig(),
    out_dir: Path = Path("runs/pretrain"),
    resume: bool = False,
    tokenizer: Path | None = None,
) -> None:
    """Pretrain a GPT on prepared token shards (next-token prediction).

    Writes metrics.csv, loss.png, run.json, a copy of the tokenizer and checkpoints/step-N/ into out_dir.
    Run it under torchrun for several processes (see scratchllm.train.distributed). Example:
    scratchllm pretrain --config configs/tiny-cpu.yaml --data.dirs data/shards --train.max-steps 500

    Args:
        data: prepared shard folder(s) (`scratchllm prepare`) and their mixture weights.
        model: model shape: a preset and optional overrides (vocab_size comes from the tokenizer).
        train: optimizer, batch, schedule, precision, evaluation and checkpoint settings.
        out_dir: run folder.
        resume: continue from the newest complete checkpoint in out_dir (starts fresh if there is none).
        tokenizer: tokenizer folder (default: the one recorded in the data's meta.json).
    """
    from scratchllm.recipes.pretrain import run_pretrain

    summary = run_pretrain(model, data, train, out_dir, resume=resume, tokenizer_dir=tokenizer)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(json.dumps(summary, indent=1, ensure_ascii=False))
