from __future__ import annotations

import math

import pytest

from scratchllm.errors import ScratchLLMError
from scratchllm.train.schedule import WarmupCosineSchedule, warmup_cosine_lr


def lr(step: int) -> float:
    return warmup_cosine_lr(step, max_lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)


def test_warmup_is_linear_and_reaches_peak():
    assert lr(0) == pytest.approx(0.1)
    assert lr(4) == pytest.approx(0.5)
    assert lr(9) == pytest.approx(1.0)
    diffs = [lr(i + 1) - lr(i) for i in range(9)]
    assert all(d == pytest.approx(0.1) for d in diffs)


def test_cosine_decay_midpoint_end_and_floor():
    assert lr(10) == pytest.approx(1.0)  # start of decay
    assert lr(60) == pytest.approx(0.1 + 0.5 * 0.9)  # half way: cos(pi/2) = 0
    assert lr(35) == pytest.approx(0.1 + 0.5 * (1 + math.cos(math.pi / 4)) * 0.9)
    assert lr(109) > 0.1
    assert lr(110) == pytest.approx(0.1)
    assert lr(10_000) == pytest.approx(0.1)
    values = [lr(s) for s in range(10, 120)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # never increases after warmup


def test_no_warmup_starts_at_peak():
    assert warmup_cosine_lr(0, max_lr=3e-4, min_lr=0.0, warmup_steps=0, max_steps=100) == pytest.approx(3e-4)


def test_schedule_object_round_trips_state_and_validates():
    sched = WarmupCosineSchedule(max_lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)
    assert sched(60) == lr(60)
    other = WarmupCosineSchedule(max_lr=2.0, min_lr=0.0, warmup_steps=1, max_steps=5)
    other.load_state_dict(sched.state_dict())
    assert other(35) == lr(35)
    with pytest.raises(ScratchLLMError, match="min_lr"):
        WarmupCosineSchedule(max_lr=1.0, min_lr=2.0, warmup_steps=1, max_steps=5)
    with pytest.raises(ScratchLLMError, match="step must be"):
        lr(-1)
