"""bf16 autocast trains like fp32: the loss curve of a small run stays within 1 % over 200 steps.

The curve is compared as means over windows of 10 steps (what a loss plot shows): single steps differ more,
because bf16 rounding changes which way each noisy step goes.

Where the CPU has native bf16 matmuls (AVX512-BF16 or AMX) the test runs with the default suite, so CI covers it
on such hardware. Elsewhere bf16 is emulated and takes minutes, so it is marked slow; run it there with
``python -m pytest -m slow tests/train/test_precision.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scratchllm.data.shards import ShardReader
from scratchllm.model import GPTModel
from scratchllm.train.loop import Trainer
from scratchllm.train.optim import build_adamw
from scratchllm.train.schedule import WarmupCosineSchedule


def _native_bf16_cpu() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:  # not Linux: assume emulated bf16
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


# In the default run only where it is fast; `-m slow` runs it everywhere.
pytestmark = [] if _native_bf16_cpu() else [pytest.mark.slow]


def test_bf16_autocast_loss_curve_within_one_percent_of_fp32(tiny_config, shards):
    curves = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = GPTModel(tiny_config(emb_dim=64, n_heads=4, context_length=32))
        reader = ShardReader(shards, "train", context_length=32, batch_size=16, seed=5)
        schedule = WarmupCosineSchedule(max_lr=3e-3, min_lr=3e-4, warmup_steps=20, max_steps=200)
        optimizer = build_adamw(model, lr=3e-3)
        trainer = Trainer(model, optimizer, reader, max_steps=200, schedule=schedule, precision=precision)
        curves[precision] = [trainer.train_step().loss for _ in range(200)]
    assert curves["fp32"][-1] < curves["fp32"][0] - 1.0  # it learned something (real text, loss stays > 0)
    windows = {k: [sum(v[i : i + 10]) / 10 for i in range(0, 200, 10)] for k, v in curves.items()}
    gaps = [abs(b - a) / a for a, b in zip(windows["fp32"], windows["bf16"])]
    assert max(gaps) < 0.01, f"largest relative gap {max(gaps):.4f} in window {gaps.index(max(gaps))}"
