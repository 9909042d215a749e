"""Pretraining recipe: next-token prediction on prepared token shards.

:func:`pretrain` is the whole run in named steps, each a function that finetuning recipes reuse:

1. :func:`~scratchllm.train.distributed.setup_distributed` joins the process group (under torchrun) and picks
   the device; :func:`~scratchllm.train.device.resolve_precision` picks the precision for it;
2. :func:`build_data` opens the shard readers (train: this rank's rows of each global batch; fixed train/val
   evaluation sets) once the model's context length is known; :func:`write_run_folder` records the settings;
3. :func:`build_model` builds the model seeded identically on every rank, :func:`wrap_model` wraps it for the
   hardware (activation checkpointing, compile, DDP or FSDP2);
4. :func:`build_trainer` builds AdamW, the schedule and the :class:`~scratchllm.train.loop.Trainer`;
   :func:`resume_or_refuse` continues from the newest complete checkpoint when asked;
5. :func:`attach_callbacks` adds evaluation, logging and checkpoints, and ``trainer.fit()`` runs.

The run folder holds ``metrics.csv``, ``loss.png``, ``run.json`` (all settings), ``tokenizer/`` (a copy, so the
checkpoints can generate on their own) and ``checkpoints/step-N/``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scratchllm.config import DataSpec, ModelConfig, ModelSpec, TrainConfig
from scratchllm.errors import ScratchLLMError

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def open_reader(
    data: DataSpec,
    split: str,
    *,
    context_length: int,
    batch_size: int,
    seed: int,
    random: bool,
    rank: int,
    world: int,
) -> Any:
    """A :class:`ShardReader` for one folder, a :class:`MixtureReader` for several."""
    common = dict(context_length=context_length, batch_size=batch_size, seed=seed, random=random)
    common.update(rank=rank, world_size=world)
    if len(data.dirs) == 1:
        from scratchllm.data.shards import ShardReader

        return ShardReader(data.dirs[0], split, **common)
    from scratchllm.data.mixture import MixtureReader

    weights = data.weights or [1.0] * len(data.dirs)
    return MixtureReader(list(data.dirs), weights, split, **common)


def _tokenizer_from_meta(meta: dict[str, Any], meta_path: Path) -> Path:
    """The tokenizer folder a dataset was prepared with (a path, or a mapping with a ``path``/``dir`` key)."""
    entry = meta.get("tokenizer")
    if isinstance(entry, dict):
        entry = entry.get("path") or entry.get("dir")
    if not entry:
        raise ScratchLLMError(f"{meta_path}: names no tokenizer folder; pass --tokenizer")
    path = Path(entry)
    return path if path.is_absolute() else (meta_path.parent / path)


def _copy_tokenizer(source: Path, target: Path) -> None:
    """Copy the tokenizer folder into the run once (atomically), so checkpoints need nothing outside the run."""
    if target.exists():
        return
    if not Path(source).is_dir():
        raise ScratchLLMError(
            f"{source}: tokenizer folder not found (from the data's meta.json or --tokenizer)"
        )
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    os.replace(tmp, target)


def write_run_folder(out_dir: Path, run_info: dict[str, Any], tokenizer: Path) -> None:
    """Create the run folder with its tokenizer copy and ``run.json`` (all settings), each written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _copy_tokenizer(tokenizer, out_dir / "tokenizer")
    tmp = out_dir / f".run.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(run_info, indent=1), encoding="utf-8")
    os.replace(tmp, out_dir / "run.json")


@dataclass
class TrainingData:
    """The batches a run trains on and the fixed sets it evaluates on (step 2)."""

    batches: Any
    eval_sets: dict[str, Any]
    vocab_size: int
    tokenizer: Path


def read_vocab_size(data: DataSpec) -> int:
    """The vocabulary size of the (first) prepared folder, which the model must cover."""
    from scratchllm.data.shards import load_meta

    return int(load_meta(data.dirs[0])["vocab_size"])


def build_data(
    data: DataSpec, train: TrainConfig, env: Any, *, context_length: int, tokenizer: Path | None, say: Log
) -> TrainingData:
    """Open the training reader and the train/val evaluation readers (val falls back to a train sample)."""
    from scratchllm.data.shards import load_meta

    meta = load_meta(data.dirs[0])
    reader_args = dict(
        context_length=context_length, batch_size=train.micro_batch_size, rank=env.rank, world=env.world_size
    )
    batches = open_reader(data, data.train_split, seed=train.seed, random=True, **reader_args)
    eval_sets = {"train": open_reader(data, data.train_split, seed=train.seed + 1, random=True, **reader_args)}
    try:
        eval_sets["val"] = open_reader(data, data.val_split, seed=train.seed, random=False, **reader_args)
    except ScratchLLMError as exc:
        say(f"no {data.val_split!r} split ({exc}); validation loss is measured on the train split")
        eval_sets["val"] = open_reader(data, data.train_split, seed=train.seed + 2, random=True, **reader_args)
    source = tokenizer or _tokenizer_from_meta(meta, data.dirs[0] / "meta.json")
    return TrainingData(batches, eval_sets, int(meta["vocab_size"]), Path(source))


def model_config_for(model: ModelSpec | ModelConfig, vocab_size: int, source: str) -> ModelConfig:
    """The model shape for data with ``vocab_size`` ids (a full config must cover them)."""
    config = model.build(vocab_size) if isinstance(model, ModelSpec) else model
    if config.vocab_size < vocab_size:
        raise ScratchLLMError(
            f"model vocab_size {config.vocab_size} is smaller than the data's ({vocab_size}, {source})"
        )
    return config


def build_model(config: ModelConfig, train: TrainConfig, env: Any) -> Any:
    """The model on its device with the same initial weights on every rank (step 3)."""
    import torch

    from scratchllm.model import GPTModel

    torch.manual_seed(train.seed)  # same seed on every rank gives the same initial weights
    net = GPTModel(config).to(env.device)
    torch.manual_seed(train.seed + env.rank)  # dropout differs per rank
    return net


def wrap_model(net: Any, train: TrainConfig, env: Any) -> Any:
    """Activation checkpointing, compile, then DDP or FSDP2, as ``train`` asks (see :func:`parallelize`)."""
    from scratchllm.train.distributed import parallelize

    return parallelize(
        net, env, mode=train.parallel, compile=train.compile, activation_checkpointing=train.activation_checkpointing
    )


def build_trainer(
    net: Any, batches: Any, train: TrainConfig, env: Any, precision: str, accum: int, loss_fn: Any = None
) -> Any:
    """AdamW, the warmup-cosine schedule and the :class:`Trainer` that runs them (step 4).

    ``loss_fn(model, batch)`` defaults to next-token prediction; finetuning recipes pass their own.
    """
    from scratchllm.train.loop import Trainer, next_token_loss
    from scratchllm.train.optim import build_adamw
    from scratchllm.train.schedule import WarmupCosineSchedule

    optimizer = build_adamw(
        net, lr=train.lr, weight_decay=train.weight_decay, betas=(train.beta1, train.beta2), eps=train.eps
    )
    schedule = WarmupCosineSchedule(
        max_lr=train.lr, min_lr=train.min_lr, warmup_steps=train.warmup_steps, max_steps=train.max_steps
    )
    return Trainer(
        net,
        optimizer,
        batches,
        max_steps=train.max_steps,
        schedule=schedule,
        loss_fn=loss_fn or next_token_loss,
        grad_accum_steps=accum,
        grad_clip=train.grad_clip,
        precision=precision,
        device=env.device,
        stop_at_step=train.stop_at_step,
        max_seconds=None if train.max_minutes is None else 60.0 * train.max_minutes,
        skip_nonfinite=train.skip_nonfinite,
    )


@contextmanager
def training_session(train: TrainConfig, log: Log) -> Iterator[tuple[Any, Log, str]]:
    """The frame every recipe runs in: ``(env, say, precision)``.

    Joins the process group (under torchrun), lets rank 0 alone speak through ``say``, resolves the precision next
    to the device it depends on, and leaves the process group at the end, also when the run fails.
    """
    from scratchllm.train.device import resolve_precision
    from scratchllm.train.distributed import setup_distributed, teardown_distributed

    env = setup_distributed(train.device)
    try:
        say: Log = log if env.is_main else (lambda _msg: None)
        yield env, say, resolve_precision(train.precision, env.device)
    finally:
        teardown_distributed()


def resume_or_refuse(trainer: Any, ckpt_root: Path, resume: bool, reschedule: bool, say: Log) -> str | None:
    """Load the newest complete checkpoint when resuming; refuse to mix a fresh run into an old one.

    A resumed run whose schedule or optimizer settings differ from the checkpoint's is refused unless
    ``reschedule`` says to apply the new ones from the resumed step (:meth:`Trainer.resume_from`).
    """
    from scratchllm.train.checkpoint import latest_checkpoint

    latest = latest_checkpoint(ckpt_root)
    if not resume:
        if latest is not None:
            raise ScratchLLMError(
                f"{ckpt_root}: holds checkpoints of an earlier run; pass --resume to continue it or choose "
                "another out_dir"
            )
        return None
    if latest is None:
        say(f"--resume: no complete checkpoint in {ckpt_root}; starting from scratch")
        return None
    trainer.resume_from(latest, reschedule=reschedule, log=say)
    say(f"resumed from {latest} (step {trainer.state.step}, {trainer.state.tokens_seen:,} tokens)")
    return str(latest)


@dataclass
class RunCallbacks:
    """What :func:`attach_callbacks` hooked into the trainer, kept for the run's summary."""

    evaluator: Any
    checkpoints: Any
    logger: Any


def attach_callbacks(
    trainer: Any,
    inputs: TrainingData,
    train: TrainConfig,
    env: Any,
    precision: str,
    *,
    out_dir: Path,
    run_info: dict[str, Any],
    resumed_from: str | None,
    flops_per_token: float,
    say: Log,
    loss_fn: Any = None,
    sample_text: bool = True,
    model_config: dict[str, Any] | None = None,
) -> RunCallbacks:
    """Evaluation (losses and a text sample), progress logging and checkpoints, in that order (step 5).

    Finetuning recipes pass their ``loss_fn`` (evaluated like the training loss), ``sample_text=False`` when
    the model does not generate (a classifier) and the ``config.json`` their checkpoints should carry.
    """
    from scratchllm.train.callbacks import CheckpointCallback, EvalCallback, LogCallback
    from scratchllm.train.checkpoint import unwrap_model
    from scratchllm.train.logging import MetricsLogger, peak_flops
    from scratchllm.train.loop import evaluate_loss, next_token_loss

    net = trainer.model
    # Evaluate and sample with the eager module (not the DDP/compile wrappers); FSDP2 needs its sharded one.
    eval_net = net if train.parallel == "fsdp" and env.distributed else unwrap_model(net)
    tokenizer = None
    if sample_text and train.sample_prompt and train.sample_tokens > 0:
        from scratchllm.tokenizer import load as load_tokenizer

        copy = out_dir / "tokenizer"
        tokenizer = load_tokenizer(copy if copy.exists() else inputs.tokenizer)

    def sample() -> str | None:
        from scratchllm.generation import generate_text

        if not (env.is_main or train.parallel == "fsdp"):  # FSDP: every rank must run the forward passes
            return None
        net.eval()
        try:
            return generate_text(
                eval_net, tokenizer, train.sample_prompt, max_new_tokens=train.sample_tokens, temperature=0.8,
                top_k=40, seed=train.seed,
            )  # fmt: skip
        finally:
            net.train()

    def eval_loss(reader: Any) -> Callable[[], float]:
        n = min(train.eval_batches, len(reader)) if hasattr(reader, "__len__") else train.eval_batches
        return lambda: evaluate_loss(
            eval_net, reader, n, loss_fn=loss_fn or next_token_loss, device=env.device, precision=precision
        )

    logger = MetricsLogger(out_dir, enabled=env.is_main, resume_step=trainer.state.step if resumed_from else None)
    evaluator = EvalCallback(
        train.eval_every,
        {name: eval_loss(reader) for name, reader in inputs.eval_sets.items()},
        sample=sample if tokenizer is not None else None,
        logger=logger,
        on_sample=lambda text: say(f"sample: {train.sample_prompt!r} -> {text!r}"),
        perplexity=loss_fn in (None, next_token_loss),
    )
    checkpoints = CheckpointCallback(
        out_dir / "checkpoints",
        train.save_every,
        train.keep_last,
        extra_state=lambda: {"run": run_info, "tokenizer": "../../tokenizer", "resumed_from": resumed_from},
        model_config=model_config or {"format": "scratchllm", "model": run_info["model"]},
        log=say,
    )
    peak = train.peak_flops or peak_flops(env.device, precision)
    trainer.callbacks = [
        evaluator,
        LogCallback(logger, train.log_every, flops_per_token=flops_per_token, peak_flops=peak),
        checkpoints,
    ]
    return RunCallbacks(evaluator, checkpoints, logger)


def pretrain(
    data: DataSpec,
    model: ModelSpec = ModelSpec(),
    train: TrainConfig = TrainConfig(),
    out_dir: Path = Path("runs/pretrain"),
    resume: bool = False,
    tokenizer: Path | None = None,
) -> dict[str, Any]:
    """Pretrain a GPT on prepared token shards (next-token prediction).

    Writes metrics.csv, loss.png, run.json, a copy of the tokenizer and checkpoints/step-N/ into out_dir and
    returns a summary (steps, tokens, losses, perplexity, checkpoint, sample). Run it under torchrun for
    several processes (see scratchllm.train.distributed). Example:
    scratchllm pretrain --config configs/tiny-cpu.yaml --data.dirs data/shards --train.max-steps 500

    Args:
        data: prepared shard folder(s) (`scratchllm prepare`) and their mixture weights.
        model: model shape: a preset and optional overrides (vocab_size comes from the tokenizer).
        train: optimizer, batch, schedule, precision, evaluation and checkpoint settings.
        out_dir: run folder.
        resume: continue from the newest complete checkpoint in out_dir (starts fresh if there is none).
        tokenizer: tokenizer folder (default: the one recorded in the data's meta.json).
    """
    from scratchllm.train.logging import flops_per_token

    out_dir = Path(out_dir)
    with training_session(train, _stderr) as (env, say, precision):
        # 1. precision, next to the device (training_session); 2. data, sized by the model's context length
        config = model_config_for(model, read_vocab_size(data), str(data.dirs[0] / "meta.json"))
        ctx = config.context_length
        accum = train.grad_accum_steps(ctx, env.world_size)
        inputs = build_data(data, train, env, context_length=ctx, tokenizer=tokenizer, say=say)
        run_info = {
            "model": config.to_dict(),
            "data": {**asdict(data), "dirs": [str(d) for d in data.dirs]},
            "train": train.to_dict(),
            **{"precision": precision, "world_size": env.world_size, "grad_accum_steps": accum},
            "tokenizer": "tokenizer",
        }
        if env.is_main:
            write_run_folder(out_dir, run_info, inputs.tokenizer)

        # 3. model; 4. optimizer, schedule, trainer, resume
        net = build_model(config, train, env)
        n_params = sum(p.numel() for p in net.parameters())
        fpt = flops_per_token(net, n_layers=config.n_layers, emb_dim=config.attn_dim, context_length=ctx)
        say(
            f"model: {n_params:,} parameters, {config.n_layers} layers x {config.emb_dim} wide, context {ctx}; "
            f"{env.world_size} process(es) on {env.device}, {precision}; global batch "
            f"{train.micro_batch_size * ctx * accum * env.world_size:,} tokens "
            f"({train.micro_batch_size} x {ctx} x {accum} accumulation x {env.world_size} processes)"
        )
        trainer = build_trainer(wrap_model(net, train, env), inputs.batches, train, env, precision, accum)
        resumed_from = resume_or_refuse(trainer, out_dir / "checkpoints", resume, train.reschedule, say)

        # 5. callbacks and the loop
        hooks = attach_callbacks(
            trainer, inputs, train, env, precision, out_dir=out_dir, run_info=run_info, resumed_from=resumed_from,
            flops_per_token=fpt, say=say,
        )  # fmt: skip
        try:
            summary = trainer.fit()
        finally:
            hooks.logger.close()
        if summary["stop_reason"] == "time_budget":
            say(f"time budget of {train.max_minutes} min reached at step {summary['step']}; saved a checkpoint")
        last_eval = hooks.evaluator.last or {}
        last_checkpoint = hooks.checkpoints.last_path
        return {
            **summary,
            **{"out_dir": str(out_dir), "parameters": n_params, "precision": precision, "world_size": env.world_size},
            **{key: last_eval.get(key) for key in ("train_loss", "val_loss", "val_perplexity", "sample")},
            "checkpoint": str(last_checkpoint) if last_checkpoint else None,
            "resumed_from": resumed_from,
        }
