"""Reusable :class:`~scratchllm.train.loop.Callback` s: periodic evaluation, progress/metrics, checkpoints.

They run after every optimizer step in list order; recipes use them as ``[EvalCallback, LogCallback,
CheckpointCallback]`` so that a checkpoint written at an evaluation step knows that step's validation loss.
Evaluation and sampling run with the random generators saved and restored around them, so evaluating (or not)
never changes the training run itself.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scratchllm.train.checkpoint import capture_rng_state, restore_rng_state, save_checkpoint
from scratchllm.train.logging import MetricsLogger, model_flops_utilization, progress_line
from scratchllm.train.loop import Callback, StepMetrics, Trainer


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


class EvalCallback(Callback):
    """Every ``every`` steps (and at the end) measure losses and optionally generate a sample.

    Args:
        every: steps between evaluations (0: only at the end).
        losses: name -> function returning a mean loss (e.g. ``{"train": ..., "val": ...}``).
        sample: function returning a text sample, or None.
        logger: where the eval row goes.
        on_sample: called with the sample text (rank 0 prints it).
        perplexity: also report ``exp(val_loss)``; only meaningful when the loss is next-token cross-entropy
            (not for a classifier's or DPO's loss).
    """

    def __init__(
        self,
        every: int,
        losses: dict[str, Callable[[], float]],
        *,
        sample: Callable[[], str] | None = None,
        logger: MetricsLogger | None = None,
        on_sample: Callable[[str], None] | None = None,
        perplexity: bool = True,
    ) -> None:
        self.every = every
        self.losses = losses
        self.sample = sample
        self.logger = logger
        self.on_sample = on_sample
        self.last: dict[str, Any] | None = None
        self.perplexity = perplexity

    def evaluate(self, trainer: Trainer) -> dict[str, Any]:
        rng = capture_rng_state()
        try:
            result: dict[str, Any] = {"step": trainer.state.step, "tokens_seen": trainer.state.tokens_seen}
            for name, fn in self.losses.items():
                result[f"{name}_loss"] = fn()
            if self.perplexity and "val_loss" in result:
                result["val_perplexity"] = math.exp(min(result["val_loss"], 50.0))
            if self.sample is not None:
                result["sample"] = self.sample()
        finally:
            restore_rng_state(rng)
        self.last = result
        trainer.last_eval = result
        if self.logger is not None:
            parts = [
                f"{k} {result[k]:.4f}" for k in ("train_loss", "val_loss", "val_perplexity") if k in result
            ]
            self.logger.log_eval(
                {k: v for k, v in result.items() if k != "sample"},
                f"eval step {result['step']} | " + " | ".join(parts),
            )
        if self.on_sample is not None and result.get("sample") is not None:
            self.on_sample(result["sample"])
        return result

    def on_step_end(self, trainer: Trainer, metrics: StepMetrics) -> None:
        if _due(metrics.step, self.every):
            self.evaluate(trainer)

    def on_train_end(self, trainer: Trainer) -> None:
        if self.last is None or self.last["step"] != trainer.state.step:
            self.evaluate(trainer)


class LogCallback(Callback):
    """Progress line + ``kind=train`` metrics row every ``every`` steps (averaging the steps in between)."""

    def __init__(
        self, logger: MetricsLogger, every: int, *, flops_per_token: float | None, peak_flops: float | None
    ) -> None:
        self.logger = logger
        self.every = every
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self._window: list[StepMetrics] = []
        self._started = time.perf_counter()
        self._recent_step_s: list[float] = []
        self._mfu_note_given = False

    def on_step_end(self, trainer: Trainer, metrics: StepMetrics) -> None:
        self._window.append(metrics)
        self._recent_step_s = (self._recent_step_s + [metrics.seconds])[-20:]
        if not (_due(metrics.step, self.every) or metrics.step == 1):
            return
        window, self._window = self._window, []
        tokens = sum(m.tokens for m in window)
        seconds = sum(m.seconds for m in window)
        tps = tokens / seconds if seconds > 0 else 0.0
        mfu = model_flops_utilization(tps, self.flops_per_token, self.peak_flops, _world_size())
        unsupported = mfu is None and bool(self.flops_per_token and self.peak_flops)  # above 100 %
        finite = [m.loss for m in window if math.isfinite(m.loss)]
        loss = sum(finite) / len(finite) if finite else float("nan")
        steps_left = trainer.max_steps - metrics.step
        if trainer.stop_at_step is not None:
            steps_left = min(steps_left, trainer.stop_at_step - metrics.step)
        eta = steps_left * (sum(self._recent_step_s) / len(self._recent_step_s))
        if trainer.max_seconds is not None:
            eta = min(eta, max(0.0, trainer.max_seconds - (time.perf_counter() - self._started)))
        row = {
            "step": metrics.step,
            "tokens_seen": metrics.tokens_seen,
            "train_loss": loss,
            "lr": metrics.lr,
            "grad_norm": metrics.grad_norm,
            "tokens_per_s": round(tps, 1),
            "mfu": None if mfu is None else round(mfu, 5),
            "skipped_steps": trainer.state.skipped_steps,
            "elapsed_s": round(trainer.state.train_seconds, 3),
        }
        line = progress_line(
            step=metrics.step,
            max_steps=trainer.max_steps,
            loss=loss,
            lr=metrics.lr,
            tokens_per_s=tps,
            mfu=mfu,
            eta_s=eta,
        )
        if metrics.skipped:
            line += f" | skipped non-finite step ({trainer.state.skipped_steps} so far)"
        if unsupported and not self._mfu_note_given:
            self._mfu_note_given = True
            line += (
                f" | MFU n/a: it would exceed 100 % of the peak {self.peak_flops:.3g} FLOP/s, so that peak was "
                "understated (e.g. measured on a busy machine); set --train.peak-flops to the device's real peak"
            )
        self.logger.log_train(row, line)


def _world_size() -> int:
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


class CheckpointCallback(Callback):
    """Save ``root/step-N`` every ``every`` steps and when training stops; keep the newest ``keep_last`` + best.

    Args:
        root: checkpoints folder.
        every: steps between checkpoints (0: only at the end).
        keep_last: newest checkpoints to keep.
        extra_state: function returning JSON data stored in trainer.json (configs, tokenizer folder, ...).
        model_config: contents of config.json, so that a checkpoint is a loadable model folder.
    """

    def __init__(
        self,
        root: Path,
        every: int,
        keep_last: int,
        *,
        extra_state: Callable[[], dict[str, Any]] | None = None,
        model_config: dict[str, Any] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.root = Path(root)
        self.every = every
        self.keep_last = keep_last
        self.extra_state = extra_state
        self.model_config = model_config
        self.log = log
        self.last_saved_step: int | None = None
        self.last_path: Path | None = None

    def save(self, trainer: Trainer) -> Path | None:
        step = trainer.state.step
        last_eval = trainer.last_eval
        val_loss = last_eval.get("val_loss") if last_eval and last_eval.get("step") == step else None
        state = {**trainer.state_dict(), "val_loss": val_loss}
        if self.extra_state is not None:
            state.update(self.extra_state())
        path = save_checkpoint(
            self.root,
            step,
            model=trainer.model,
            optimizer=trainer.optimizer,
            trainer_state=state,
            model_config=self.model_config,
            keep_last=self.keep_last,
        )
        self.last_saved_step = step
        if path is not None:
            self.last_path = path
            if self.log is not None:
                self.log(f"saved checkpoint {path}")
        return path

    def on_train_start(self, trainer: Trainer) -> None:
        self.last_saved_step = trainer.state.step  # resuming: that checkpoint exists already

    def on_step_end(self, trainer: Trainer, metrics: StepMetrics) -> None:
        if _due(metrics.step, self.every):
            self.save(trainer)

    def on_train_end(self, trainer: Trainer) -> None:
        if self.last_saved_step != trainer.state.step:
            self.save(trainer)
