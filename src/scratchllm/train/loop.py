"""The one training loop every recipe uses.

A :class:`Trainer` owns the mechanics that are easy to get subtly wrong and identical for pretraining and
finetuning: gradient accumulation (with DDP/FSDP gradient sync only on the last micro-batch), bf16 autocast,
gradient clipping, the learning-rate schedule, non-finite detection *before* the optimizer step, token counting
and timing. What differs between recipes is injected:

* the **batch source**: anything with ``next_batch()``, ``state_dict()`` and ``load_state_dict()``
  (:class:`scratchllm.data.shards.ShardReader`, a mixture, a finetuning loader);
* the **loss function** ``loss_fn(model, batch) -> scalar``: next-token cross-entropy by default; masking
  (instruction tuning) or a classification head plug in here;
* **callbacks** (:class:`Callback`) for evaluation, logging and checkpoints, called after every step in order.

One step = ``grad_accum_steps`` micro-batches on each process. Each micro-batch loss is a mean over what it
counts. When every micro-batch counts as much as the others (pretraining's full rows, a classifier's examples),
the step's loss is the mean of the micro-batch losses and of the processes' losses. When they do not (instruction
tuning scores only response tokens), a loss function says what it counts through a ``count_items(batch)``
attribute, and each micro-batch is weighted by its share of the items of the whole step on all processes: the
step's loss and gradient are then those of one big batch, however its items fall into micro-batches and processes.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from scratchllm.errors import ScratchLLMError
from scratchllm.train.checkpoint import load_checkpoint
from scratchllm.train.schedule import WarmupCosineSchedule, schedule_changes

LossFn = Callable[[nn.Module, Any], torch.Tensor]


class BatchSource(Protocol):
    """What the trainer reads batches from."""

    def next_batch(self) -> Any: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def next_token_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    """Mean cross-entropy of predicting ``targets`` from ``inputs`` (targets of -100 are ignored).

    The logits are upcast to fp32 first: under bf16 autocast the log-softmax over a 50k vocabulary is where
    precision matters most.
    """
    inputs, targets = batch[0], batch[1]
    logits = model(inputs)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)


def _scored_targets(batch: Any) -> int:
    """How many targets :func:`next_token_loss` averages over: those that are not -100."""
    return int((batch[1] != -100).sum())


next_token_loss.count_items = _scored_targets  # type: ignore[attr-defined]


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) tuple/list/dict batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


def count_tokens(batch: Any) -> int:
    """Tokens fed to the model: the size of the first tensor of the batch (the inputs)."""
    if isinstance(batch, torch.Tensor):
        return batch.numel()
    if isinstance(batch, dict):
        batch = batch.get("input_ids", next(iter(batch.values())))
        return count_tokens(batch)
    if isinstance(batch, (list, tuple)) and batch:
        return count_tokens(batch[0])
    return 0


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for ``precision == 'bf16'``; a no-op context otherwise."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def gradient_sync(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Skip the gradient all-reduce of DDP / reduce-scatter of FSDP2 on all but the last micro-batch."""
    if sync:
        return contextlib.nullcontext()
    if hasattr(model, "no_sync"):  # DistributedDataParallel
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2 (fully_shard)

        @contextlib.contextmanager
        def _fsdp_no_sync() -> Iterator[None]:
            model.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                model.set_requires_gradient_sync(True)

        return _fsdp_no_sync()
    return contextlib.nullcontext()


def _all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        value = value.clone()
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.SUM)
        value /= torch.distributed.get_world_size()
    return value


def _all_reduce_sum(value: int, device: torch.device) -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        total = torch.tensor(value, device=device, dtype=torch.long)
        torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.SUM)
        return int(total.item())
    return value


def _world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


#: optimizer settings a checkpoint carries in its param groups (the learning rate too, when no schedule sets it)
OPTIMIZER_SETTINGS = ("weight_decay", "betas", "eps")


def optimizer_settings(
    optimizer: torch.optim.Optimizer, keys: Iterable[str] = OPTIMIZER_SETTINGS
) -> list[dict[str, Any]]:
    """The settings ``keys`` of each param group, tuples as lists (as they come back from JSON)."""
    keys = tuple(keys)
    return [
        {k: list(g[k]) if isinstance(g[k], tuple) else g[k] for k in keys if k in g}
        for g in optimizer.param_groups
    ]


def optimizer_changes(saved: list[dict[str, Any]], current: list[dict[str, Any]]) -> list[str]:
    """``"weight_decay 0.1 -> 0.05"`` for each setting that differs in some param group (reported once)."""
    changes: dict[str, str] = {}
    for old, new in zip(saved, current):
        for key, value in old.items():
            if key not in changes and new.get(key) != value:
                changes[key] = f"{key} {value} -> {new.get(key)}"
    return list(changes.values())


def _stderr_on_rank0(message: str) -> None:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()) or (
        torch.distributed.get_rank() == 0
    ):
        print(f"scratchllm: {message}", file=sys.stderr, flush=True)


@dataclass
class TrainState:
    """Counters that, with model/optimizer/data/RNG state, define where a run is."""

    step: int = 0  # optimizer steps completed
    tokens_seen: int = 0  # tokens consumed by those steps, over all processes
    skipped_steps: int = 0  # steps dropped because their loss or gradient was not finite
    train_seconds: float = 0.0  # wall time spent in steps, over all sittings


@dataclass
class StepMetrics:
    """What one optimizer step measured; handed to every callback."""

    step: int  # 1-based: this many steps are done
    loss: float
    lr: float
    grad_norm: float
    tokens: int  # tokens in this step, all processes
    tokens_seen: int
    seconds: float
    skipped: bool = False

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


class Callback:
    """Hooks into :meth:`Trainer.fit`; override what you need. Called in list order."""

    def on_train_start(self, trainer: Trainer) -> None:
        pass

    def on_step_end(self, trainer: Trainer, metrics: StepMetrics) -> None:
        pass

    def on_train_end(self, trainer: Trainer) -> None:
        pass


class Trainer:
    """Runs optimizer steps on ``model`` until ``max_steps``, ``stop_at_step`` or the time budget.

    Args:
        model: the module to train (possibly wrapped by DDP/FSDP/compile).
        optimizer: its optimizer.
        batches: the batch source (see :class:`BatchSource`).
        max_steps: total optimizer steps (the schedule's horizon).
        schedule: ``step -> learning rate``; ``None`` keeps the optimizer's learning rate.
        loss_fn: ``(model, batch) -> scalar loss``.
        grad_accum_steps: micro-batches per optimizer step on each process.
        grad_clip: maximum global gradient norm (0 disables clipping; the norm is still measured).
        precision: ``"fp32"`` or ``"bf16"`` (autocast).
        device: where batches are moved.
        stop_at_step: stop early at this step without changing the schedule.
        max_seconds: stop once this much wall time has been spent in this call of :meth:`fit`.
        skip_nonfinite: skip (and count) steps with a non-finite loss or gradient norm instead of raising.
        callbacks: evaluation / logging / checkpoint hooks.

    Attributes callbacks share: ``state`` (:class:`TrainState`), ``stop_reason`` once :meth:`fit` returns, and
    ``last_eval``, the newest evaluation result (a dict with ``step`` and losses, set by an evaluation callback
    and read by the checkpoint callback to keep the best checkpoint).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        batches: BatchSource,
        *,
        max_steps: int,
        schedule: Callable[[int], float] | None = None,
        loss_fn: LossFn = next_token_loss,
        grad_accum_steps: int = 1,
        grad_clip: float = 1.0,
        precision: str = "fp32",
        device: torch.device | str = "cpu",
        stop_at_step: int | None = None,
        max_seconds: float | None = None,
        skip_nonfinite: bool = False,
        callbacks: Iterable[Callback] = (),
    ) -> None:
        if precision not in ("fp32", "bf16"):
            raise ScratchLLMError(f"trainer: precision must be fp32 or bf16, got {precision!r}")
        if grad_accum_steps < 1:
            raise ScratchLLMError(f"trainer: grad_accum_steps must be >= 1, got {grad_accum_steps}")
        self.model = model
        self.optimizer = optimizer
        self.batches = batches
        self.max_steps = max_steps
        self.schedule = schedule
        self.loss_fn = loss_fn
        self.grad_accum_steps = grad_accum_steps
        self.grad_clip = grad_clip
        self.precision = precision
        self.device = torch.device(device)
        self.stop_at_step = stop_at_step
        self.max_seconds = max_seconds
        self.skip_nonfinite = skip_nonfinite
        self.callbacks = list(callbacks)
        self.state = TrainState()
        self.stop_reason: str | None = None
        self.last_eval: dict[str, Any] | None = None
        self._params = [p for p in model.parameters() if p.requires_grad]

    # ------------------------------------------------------------------------------------------ one step
    def _micro_batch_weights(self, micro_batches: list[Any]) -> list[float]:
        """Each micro-batch's weight in the step's loss: when the loss counts ``count_items``, its items' share
        of the whole step's on all processes, times the number of processes (whose gradients DDP and FSDP
        average); otherwise, or when the step counts nothing (its loss is not finite), the plain mean."""
        plain = [1 / len(micro_batches)] * len(micro_batches)
        count = getattr(self.loss_fn, "count_items", None)
        if count is None:
            return plain
        counts = [count(batch) for batch in micro_batches]
        total = _all_reduce_sum(sum(counts), self.device)
        return [c * _world_size() / total for c in counts] if total else plain

    def train_step(self) -> StepMetrics:
        """Accumulate gradients over the micro-batches, check them, clip, and step the optimizer."""
        step = self.state.step
        if self.schedule is not None:
            lr = float(self.schedule(step))
            for group in self.optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.model.train()
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float32)
        micro_batches = [self.batches.next_batch() for _ in range(self.grad_accum_steps)]
        tokens = sum(count_tokens(batch) for batch in micro_batches)
        weights = self._micro_batch_weights(micro_batches)  # counted where the batches are made: no device sync
        for micro, batch in enumerate(micro_batches):
            batch = move_to_device(batch, self.device)
            last = micro == self.grad_accum_steps - 1
            with gradient_sync(self.model, last):
                with autocast_context(self.device, self.precision):
                    loss = self.loss_fn(self.model, batch)
                (loss * weights[micro]).backward()
            loss_sum += loss.detach().float() * weights[micro]
        loss_mean = _all_reduce_mean(loss_sum)
        max_norm = self.grad_clip if self.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self._params, max_norm)
        if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP2
            grad_norm = grad_norm.full_tensor()
        loss_value = float(loss_mean)
        norm_value = float(grad_norm)
        skipped = not (math.isfinite(loss_value) and math.isfinite(norm_value))
        if skipped:
            # Drop the gradients before anything touches the weights or the optimizer moments.
            self.optimizer.zero_grad(set_to_none=True)
            if not self.skip_nonfinite:
                raise ScratchLLMError(
                    f"step {step + 1}: non-finite loss ({loss_value}) or gradient norm ({norm_value}); stopped "
                    "before the optimizer step, so weights and checkpoints are unchanged (lower the learning "
                    "rate, or pass --train.skip-nonfinite to skip such steps)"
                )
            self.state.skipped_steps += 1
        else:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        tokens *= _world_size()
        self.state.step += 1
        self.state.tokens_seen += tokens
        self.state.train_seconds += seconds
        return StepMetrics(
            step=self.state.step,
            loss=loss_value,
            lr=lr,
            grad_norm=norm_value,
            tokens=tokens,
            tokens_seen=self.state.tokens_seen,
            seconds=seconds,
            skipped=skipped,
        )

    # ------------------------------------------------------------------------------------------ the loop
    def _should_stop(self, started: float) -> str | None:
        if self.state.step >= self.max_steps:
            return "max_steps"
        if self.stop_at_step is not None and self.state.step >= self.stop_at_step:
            return "stop_at_step"
        if self.max_seconds is not None:
            out_of_time = torch.tensor(float(time.perf_counter() - started >= self.max_seconds))
            # Every process must agree, or the ones that go on wait forever in the next all-reduce.
            if _all_reduce_mean(out_of_time.to(self.device)).item() > 0:
                return "time_budget"
        return None

    def fit(self) -> dict[str, Any]:
        """Train until a stop condition; return a summary (step, tokens, stop reason, last loss)."""
        for callback in self.callbacks:
            callback.on_train_start(self)
        started = time.perf_counter()
        last: StepMetrics | None = None
        while True:
            reason = self._should_stop(started)
            if reason is not None:
                break
            last = self.train_step()
            for callback in self.callbacks:
                callback.on_step_end(self, last)
        self.stop_reason = reason
        for callback in self.callbacks:
            callback.on_train_end(self)
        return {
            "step": self.state.step,
            "tokens_seen": self.state.tokens_seen,
            "skipped_steps": self.state.skipped_steps,
            "stop_reason": reason,
            "last_loss": last.loss if last is not None else None,
            "seconds": time.perf_counter() - started,
        }

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable trainer state: counters, schedule and data position (not weights/optimizer)."""
        schedule_state = self.schedule.state_dict() if hasattr(self.schedule, "state_dict") else None
        return {"state": asdict(self.state), "schedule": schedule_state, "data": self.batches.state_dict()}

    def load_state_dict(self, state: dict[str, Any], *, reschedule: bool = False) -> None:
        """Restore counters and data position from :meth:`state_dict`.

        The schedule is not loaded but compared: a saved schedule that differs from this trainer's raises
        :class:`ScratchLLMError` naming each change, unless ``reschedule`` (then this trainer's schedule applies
        from the saved step on).
        """
        changes = self.schedule_changes(state)
        if changes and not reschedule:
            raise _changed_settings_error(f"step {state['state']['step']}", changes)
        self.state = TrainState(**state["state"])
        self.batches.load_state_dict(state["data"])

    def schedule_changes(self, state: dict[str, Any]) -> list[str]:
        """How this trainer's schedule differs from the one saved in ``state`` (empty when they agree)."""
        saved = state.get("schedule")
        if saved is None or not hasattr(self.schedule, "state_dict"):
            return []
        return schedule_changes(saved, self.schedule.state_dict())

    def resume_from(
        self, path: str | Path, *, reschedule: bool = False, log: Callable[[str], None] | None = None
    ) -> dict[str, Any]:
        """Continue the run saved in checkpoint ``path``: weights, optimizer, RNG, counters, data position.

        A resumed run must never disagree with itself. When the schedule (lr, min_lr, warmup_steps, max_steps)
        or the optimizer settings (weight_decay, betas, eps) differ from the checkpoint's, this refuses with one
        line naming each change and both values; with ``reschedule`` the new values apply from the saved step
        on, and ``log`` (default: stderr on rank 0) says so. Without a schedule the learning rate counts as an
        optimizer setting. Returns the checkpoint's ``trainer.json``.
        """
        say = log or _stderr_on_rank0
        keys = OPTIMIZER_SETTINGS + (("lr",) if self.schedule is None else ())
        live_settings = optimizer_settings(self.optimizer, keys)
        state = load_checkpoint(path, model=self.model, optimizer=self.optimizer, log=say)
        step = state["state"]["step"]
        changes = self.schedule_changes(state) + optimizer_changes(
            optimizer_settings(self.optimizer, keys), live_settings
        )
        if changes and not reschedule:
            raise _changed_settings_error(str(path), changes)
        for group, settings in zip(self.optimizer.param_groups, live_settings):
            group.update({k: tuple(v) if k == "betas" else v for k, v in settings.items()})
        self.load_state_dict(state, reschedule=True)
        if changes:
            lr_note = ""
            if isinstance(self.schedule, WarmupCosineSchedule) and state.get("schedule") is not None:
                old_lr = WarmupCosineSchedule(**state["schedule"])(step)
                lr_note = f"; learning rate at this step {old_lr:.3g} -> {self.schedule(step):.3g}"
            say(f"reschedule: from step {step} on the new settings apply ({', '.join(changes)}){lr_note}")
        return state


def _changed_settings_error(where: str, changes: list[str]) -> ScratchLLMError:
    return ScratchLLMError(
        f"{where}: resuming with other settings than the checkpoint's ({', '.join(changes)}); use the "
        "checkpoint's values, or pass --train.reschedule to apply the new ones from the resumed step on"
    )


# ---------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_loss(
    model: nn.Module,
    batches: BatchSource,
    num_batches: int,
    *,
    loss_fn: LossFn = next_token_loss,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
) -> float:
    """Mean loss over the first ``num_batches`` batches after ``batches.reset()`` (a fixed evaluation set).

    With several processes each one evaluates its own slice and the means are averaged.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    if hasattr(batches, "reset"):
        batches.reset()
    total = torch.zeros((), device=device, dtype=torch.float32)
    try:
        for _ in range(num_batches):
            batch = move_to_device(batches.next_batch(), device)
            with autocast_context(device, precision):
                total += loss_fn(model, batch).float()
    finally:
        model.train(was_training)
    return float(_all_reduce_mean(total / num_batches))
