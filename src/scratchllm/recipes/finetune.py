"""Steps every finetuning recipe shares, on the pretraining recipe's named steps and the one training core.

A finetuning run differs from pretraining in where its model comes from (:func:`load_base`: any model
:func:`scratchllm.weights.load` reads, or the same shape re-initialised for a from-scratch baseline), what
trains (:func:`choose_trainable`: everything, the last blocks, or LoRA adapters) and how it is judged: data
small enough to go round several times, so :func:`train_epochs` evaluates and checkpoints at the end of every
epoch and keeps the weights of the best epoch on the validation set (early stopping without stopping). The
training itself is :func:`~scratchllm.recipes.pretrain.build_trainer`,
:func:`~scratchllm.recipes.pretrain.resume_or_refuse` and :func:`~scratchllm.recipes.pretrain.attach_callbacks`
with the recipe's ``loss_fn``: no second training loop.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scratchllm.config import LoRAConfig, TrainConfig
from scratchllm.errors import ScratchLLMError
from scratchllm.recipes.pretrain import (
    TrainingData,
    attach_callbacks,
    build_trainer,
    resume_or_refuse,
    training_session,
    wrap_model,
    write_run_folder,
)

Log = Callable[[str], None]
__all__ = [
    "FINETUNE_TRAIN", "TrainingData", "choose_trainable", "load_base", "prepare_run_folder", "session",
    "split_data", "train_epochs",
]  # fmt: skip


def stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


#: TrainConfig defaults for finetuning: a small constant-ish learning rate, no text samples, epoch-wise
#: evaluation and checkpoints (see :func:`train_epochs`).
FINETUNE_TRAIN = TrainConfig(
    micro_batch_size=8, lr=5e-5, min_lr=5e-5, warmup_steps=0, weight_decay=0.1, eval_every=0, save_every=0,
    eval_batches=20, sample_prompt="", log_every=10, beta2=0.999, keep_last=1,
)  # fmt: skip


@contextmanager
def session(train: TrainConfig, fsdp: bool = True) -> Iterator[tuple[Any, Log, str]]:
    """Pretraining's :func:`~scratchllm.recipes.pretrain.training_session`, for a finetuning recipe.

    Under DDP each process takes its slice of every global batch. Under FSDP2 (``--train.parallel fsdp``),
    :func:`train_epochs` shards the model for training and gathers it whole again afterwards; a recipe that
    trains without it passes ``fsdp=False`` and such a run is refused before anything is read or written.
    """
    if train.parallel == "fsdp" and not fsdp:
        raise ScratchLLMError("train.parallel fsdp: this recipe runs under DDP only (use --train.parallel ddp)")
    import torch

    with training_session(train, stderr) as (env, say, precision):
        torch.manual_seed(train.seed + env.rank)  # PyTorch starts from a random seed; dropout differs per rank
        yield env, say, precision


def load_base(
    model: Path, env: Any, *, seed: int, from_scratch: bool = False, tokenizer: Path | None = None,
    dropout: float | None = None, say: Log = stderr,
) -> Any:
    """The model to finetune (float32, train mode) with its tokenizer; ``from_scratch`` re-initialises it and
    ``dropout`` replaces the model's own dropout rate (announced, since it changes the saved config too)."""
    import torch

    from scratchllm.weights import load

    loaded = load(model, device=env.device, dtype=torch.float32, tokenizer=tokenizer)
    if from_scratch:
        torch.manual_seed(seed)
        loaded.model.reset_parameters()
        say(f"from_scratch: {model}'s shape and tokenizer with random weights (seed {seed})")
    own = loaded.model.config.drop_rate
    if dropout is not None and dropout != own:
        loaded.model.set_dropout(dropout)  # first: a rate it refuses is not announced
        say(f"dropout {dropout} while training (the model's config has {own})")
    loaded.model.train()
    return loaded


def choose_trainable(
    net: Any, backbone: Any, trains: str, lora: LoRAConfig, say: Log, *, freeze_rest: Callable[[], None], seed: int
) -> LoRAConfig | None:
    """Apply the ``trains`` choice (``freeze_rest`` freezes what the choice does not train); print the counts.

    With ``lora`` the adapters go into ``backbone`` (names relative to the decoder, so adapters export to peft)
    and everything ``freeze_rest`` left trainable (a new head) keeps training. Their random initialisation
    comes from ``seed`` alone: the same on every rank and in every run with that seed.
    """
    import torch

    from scratchllm.model.lora import apply_lora, trainable_parameters

    freeze_rest()
    config = None
    if trains == "lora":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            config = apply_lora(backbone, lora, freeze=False)
    trainable, total = trainable_parameters(net)
    say(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f} %), trains={trains}")
    return config


def prepare_run_folder(out_dir: Path, tokenizer: Any, run_info: dict[str, Any], resume: bool) -> None:
    """``run.json`` and ``tokenizer/`` in the run folder (the tokenizer written from the loaded one)."""
    from scratchllm.train.checkpoint import latest_checkpoint

    if not resume and latest_checkpoint(out_dir / "checkpoints") is not None:
        raise ScratchLLMError(
            f"{out_dir / 'checkpoints'}: holds checkpoints of an earlier run; pass --resume to continue it or "
            "choose another out_dir"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    if not (out_dir / "tokenizer").exists():
        tokenizer.save(out_dir / "tokenizer")
    write_run_folder(out_dir, run_info, out_dir / "tokenizer")


def checkpoint_config(model: Any, run_info: dict[str, Any], lora: Any) -> dict[str, Any]:
    """The config each checkpoint records: a plain model, or for LoRA the whole run (base + adapters).

    A LoRA run's checkpoints hold base and adapters, so they resume the run but are not a plain model
    (``RUN/adapter`` is the result); their config says so instead of posing as one.
    """
    if lora is not None:
        return {"format": "scratchllm-lora-training", **run_info}
    return {"format": "scratchllm", "model": model.config.to_dict()}


def split_data(
    data: Path,
    val_data: Path | None,
    test_data: Path | None,
    read: Callable[[Path], list[Any]],
    *,
    split: Sequence[float],
    seed: int,
    say: Log,
    prepare: Callable[[list[Any], dict[str, list[Any]]], list[Any]] | None = None,
) -> dict[str, list[Any]]:
    """Train/val/test records: the given split files, or a seeded split of ``data``; none may be empty.

    ``prepare(records, given_splits)`` may check or filter the records of ``data`` first (labels, balancing).
    """
    from scratchllm.data.classify import split as split_records

    if (val_data is None) != (test_data is None):
        raise ScratchLLMError("give both --val-data and --test-data, or neither (to split --data)")
    records = read(Path(data))
    given = {"val": read(Path(val_data)), "test": read(Path(test_data))} if val_data and test_data else {}
    if prepare is not None:
        records = prepare(records, given)
    if given:
        parts = {"train": records, **given}
    else:
        train, val, test = split_records(records, split, seed)
        parts = {"train": train, "val": val, "test": test}
    for name, part in parts.items():
        if not part:
            raise ScratchLLMError(f"{data}: the {name} split is empty ({len(records)} records after filtering)")
    say("data: " + ", ".join(f"{name} {len(part)}" for name, part in parts.items()))
    return parts


@dataclass
class EpochResult:
    """What :func:`train_epochs` returns: the trained model (the best epoch's weights, whole even after FSDP2),
    the trainer's summary, the per-epoch history and the best epoch."""

    model: Any
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    best: dict[str, Any] | None
    resumed_from: str | None


def train_epochs(
    net: Any,
    inputs: TrainingData,
    loss_fn: Callable[[Any, Any], Any],
    *,
    epochs: int,
    train: TrainConfig,
    env: Any,
    precision: str,
    out_dir: Path,
    run_info: dict[str, Any],
    resume: bool,
    model_config: dict[str, Any],
    score: Callable[[], dict[str, float]] | None,
    say: Log,
) -> EpochResult:
    """Train ``epochs`` passes over ``inputs.batches`` on the one training core; end on the best epoch's weights.

    Use the returned ``model`` afterwards: under FSDP2 ``net`` itself stays sharded and the result is a whole
    copy on every process (:func:`~scratchllm.train.distributed.gather_full_model`).
    """
    from scratchllm.train.distributed import gather_full_model, skeleton_of
    from scratchllm.train.epochs import EpochCallback
    from scratchllm.train.logging import flops_per_token

    if train.global_batch_tokens is not None:
        raise ScratchLLMError(
            "train.global_batch_tokens: finetuning batches hold examples of varying length, not a fixed number "
            "of tokens; set train.micro_batch_size instead"
        )
    steps_per_epoch = len(inputs.batches)
    max_steps = epochs * steps_per_epoch
    if train.max_steps != max_steps:
        say(f"{epochs} epoch(s) of {steps_per_epoch} steps: train.max_steps = {max_steps}")
        train = dataclasses.replace(train, max_steps=max_steps)
    sharded = train.parallel == "fsdp" and env.distributed
    skeleton = skeleton_of(net) if sharded else None
    trainer = build_trainer(wrap_model(net, train, env), inputs.batches, train, env, precision, 1, loss_fn)
    resumed_from = resume_or_refuse(trainer, out_dir / "checkpoints", resume, train.reschedule, say)
    cfg = getattr(getattr(net, "model", net), "config", None)
    fpt = flops_per_token(net, n_layers=cfg.n_layers, emb_dim=cfg.attn_dim, context_length=1) if cfg else 0.0
    hooks = attach_callbacks(
        trainer, inputs, train, env, precision, out_dir=out_dir, run_info=run_info, resumed_from=resumed_from,
        flops_per_token=fpt, say=say, loss_fn=loss_fn, sample_text=False, model_config=model_config,
    )  # fmt: skip
    epoch_hook = EpochCallback(steps_per_epoch, hooks, net, score, say)
    trainer.callbacks.append(epoch_hook)
    try:
        summary = trainer.fit()
    finally:
        hooks.logger.close()
    summary["train_seconds"] = trainer.state.train_seconds  # the optimizer steps alone, without evaluations
    epoch_hook.restore_best()
    if epoch_hook.best is not None:
        say(f"best epoch on validation: {epoch_hook.best['epoch']:.2f} (step {epoch_hook.best['step']}); using it")
    model = gather_full_model(net, skeleton, env.device) if skeleton is not None else net
    return EpochResult(model, summary, epoch_hook.history, epoch_hook.best, resumed_from)
