"""Epoch-wise evaluation, checkpoints and best-epoch weights for finetuning runs (a :class:`Callback`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from scratchllm.train.distributed import reshard
from scratchllm.train.loop import Callback, StepMetrics, Trainer


class EpochCallback(Callback):
    """At each epoch's end: evaluate (losses + ``score``), checkpoint, and remember the best trainable weights.

    "Best" is the highest ``score`` (e.g. validation accuracy; ``None`` to use the lowest validation loss).
    Keeping only the trainable tensors makes the snapshot small for LoRA and head-only runs; under FSDP2 each
    rank keeps its shards of them.
    """

    def __init__(
        self, steps_per_epoch: int, hooks: Any, net: nn.Module, score: Callable[[], dict[str, float]] | None,
        say: Callable[[str], None],
    ) -> None:
        self.steps_per_epoch = steps_per_epoch
        self.hooks = hooks
        self.net = net
        self.score = score
        self.say = say
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.best_state: dict[str, torch.Tensor] | None = None

    def _epoch_end(self, trainer: Trainer) -> None:
        step = trainer.state.step
        result = dict(self.hooks.evaluator.last or {})
        if result.get("step") != step:
            result = dict(self.hooks.evaluator.evaluate(trainer))
        result["epoch"] = step / self.steps_per_epoch
        if self.score is not None:
            result.update(self.score())
        self.history.append(result)
        shown = {k: round(v, 4) for k, v in result.items() if isinstance(v, float) and k != "epoch"}
        self.say(f"epoch {result['epoch']:.2f} (step {step}): {shown}")
        key = (result.get("val_score", 0.0), -result.get("val_loss", 0.0))
        if self.best is None or key > (self.best.get("val_score", 0.0), -self.best.get("val_loss", 0.0)):
            self.best = result
            reshard(self.net)  # FSDP2: each rank keeps its own shards
            self.best_state = {
                n: p.detach().clone() for n, p in self.net.named_parameters() if p.requires_grad
            }
        if self.hooks.checkpoints.last_saved_step != step:
            self.hooks.checkpoints.save(trainer)

    def on_step_end(self, trainer: Trainer, metrics: StepMetrics) -> None:
        if metrics.step % self.steps_per_epoch == 0:
            self._epoch_end(trainer)

    def on_train_end(self, trainer: Trainer) -> None:
        if not self.history or self.history[-1].get("step") != trainer.state.step:
            self._epoch_end(trainer)

    def restore_best(self) -> None:
        if self.best_state is None:
            return
        reshard(self.net)
        params = dict(self.net.named_parameters())
        with torch.no_grad():
            for name, tensor in self.best_state.items():
                params[name].copy_(tensor)
