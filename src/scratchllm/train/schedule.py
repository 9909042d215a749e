"""Learning-rate schedule: linear warmup, then cosine decay to a floor.

This is the schedule GPT-2/GPT-3 style pretraining uses (Loshchilov & Hutter's cosine annealing without restarts,
preceded by a warmup because Adam's second-moment estimates are unreliable in the first steps). It is a pure
function of the step number, so resuming a run needs nothing but the step to continue the same curve, and a
resume that changes the settings can say exactly what changed (:func:`schedule_changes`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from scratchllm.errors import ScratchLLMError


def warmup_cosine_lr(step: int, *, max_lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based).

    * ``step < warmup_steps``: rises linearly, reaching ``max_lr`` at the last warmup step
      (``max_lr * (step + 1) / warmup_steps``), so the very first step already moves the weights.
    * ``warmup_steps <= step < max_steps``: half a cosine from ``max_lr`` down towards ``min_lr``.
    * ``step >= max_steps``: stays at the floor ``min_lr``.
    """
    if step < 0:
        raise ScratchLLMError(f"learning-rate schedule: step must be >= 0, got {step}")
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    decay_steps = max_steps - warmup_steps
    progress = (step - warmup_steps) / decay_steps
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


#: schedule fields under their :class:`~scratchllm.config.TrainConfig` names, for messages users act on
_CONFIG_NAMES = {"max_lr": "lr"}


@dataclass
class WarmupCosineSchedule:
    """:func:`warmup_cosine_lr` bound to its settings; call it with a step to get the learning rate."""

    max_lr: float
    min_lr: float
    warmup_steps: int
    max_steps: int

    def __post_init__(self) -> None:
        if self.max_lr <= 0 or self.min_lr < 0 or self.min_lr > self.max_lr:
            raise ScratchLLMError(
                f"learning-rate schedule: need 0 <= min_lr <= lr and lr > 0, got lr={self.max_lr}, "
                f"min_lr={self.min_lr}"
            )
        if self.warmup_steps < 0 or self.max_steps < 1:
            raise ScratchLLMError(
                f"learning-rate schedule: need warmup_steps >= 0 and max_steps >= 1, got "
                f"warmup_steps={self.warmup_steps}, max_steps={self.max_steps}"
            )

    def __call__(self, step: int) -> float:
        return warmup_cosine_lr(
            step,
            max_lr=self.max_lr,
            min_lr=self.min_lr,
            warmup_steps=self.warmup_steps,
            max_steps=self.max_steps,
        )

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def schedule_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``"lr 0.001 -> 0.002"`` for every setting whose saved and current values differ (TrainConfig names)."""
    return [
        f"{_CONFIG_NAMES.get(key, key)} {saved[key]} -> {current.get(key)}"
        for key in saved
        if saved[key] != current.get(key)
    ]
