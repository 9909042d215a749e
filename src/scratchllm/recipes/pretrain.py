"""Pretraining recipe: next-token prediction on prepared token shards.

Read top to bottom, this is the whole pipeline of a pretraining run:

1. join the process group (when launched by torchrun) and pick the device and precision;
2. open the shard readers (train: this rank's rows of each global batch; fixed train/val evaluation sets);
3. build the model from a preset with the tokenizer's vocabulary size, seeded identically on every rank;
4. wrap it for the hardware (activation checkpointing, compile, DDP or FSDP2) and build AdamW + the schedule;
5. resume from the newest complete checkpoint when asked;
6. run the shared :class:`~scratchllm.train.loop.Trainer` with evaluation, logging and checkpoint callbacks.

The run folder holds ``metrics.csv``, ``loss.png``, ``run.json`` (all settings), ``tokenizer/`` (a copy, so the
checkpoints can generate on their own) and ``checkpoints/step-N/``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from scratchllm.config import DataSpec, ModelConfig, ModelSpec, TrainConfig
from scratchllm.errors import ScratchLLMError


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def resolve_precision(precision: str, device: Any) -> str:
    """``auto`` -> ``bf16`` on GPUs with bf16 and CPUs with native bf16 instructions (AVX512-BF16/AMX), else fp32."""
    import torch

    if precision != "auto":
        if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ScratchLLMError("train.precision: bf16 is not supported by this GPU; use fp32")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        try:
            flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "fp32"
        return "bf16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "fp32"
    return "fp32"


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
    common = dict(
        context_length=context_length,
        batch_size=batch_size,
        seed=seed,
        random=random,
        rank=rank,
        world_size=world,
    )
    if len(data.dirs) == 1:
        from scratchllm.data.shards import ShardReader

        return ShardReader(data.dirs[0], split, **common)
    from scratchllm.data.mixture import MixtureReader

    weights = data.weights or [1.0] * len(data.dirs)
    return MixtureReader(list(data.dirs), weights, split, **common)


def _as_data_spec(data: DataSpec | str | Path | Sequence[str | Path]) -> DataSpec:
    if isinstance(data, DataSpec):
        return data
    if isinstance(data, (str, Path)):
        return DataSpec(dirs=[Path(data)])
    return DataSpec(dirs=[Path(d) for d in data])


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


def run_pretrain(
    model: ModelSpec | ModelConfig | str,
    data: DataSpec | str | Path | Sequence[str | Path],
    train: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    tokenizer_dir: str | Path | None = None,
    sample_prompt: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Pretrain a GPT and return a summary (steps, tokens, losses, perplexity, checkpoint, sample).

    Args:
        model: a :class:`ModelSpec`, a preset name, or a full :class:`ModelConfig` (its vocab_size must cover the
            tokenizer's).
        data: prepared shard folder(s) or a :class:`DataSpec` (several folders are mixed by weight).
        train: training settings.
        out_dir: run folder.
        resume: continue from the newest complete checkpoint in ``out_dir/checkpoints`` (fresh start if none).
        tokenizer_dir: tokenizer folder; default: the one recorded in the data's meta.json.
        sample_prompt: overrides ``train.sample_prompt``.
        log: where progress messages go (rank 0 only; default stderr).
    """
    import torch

    from scratchllm.model import GPTModel
    from scratchllm.train.callbacks import CheckpointCallback, EvalCallback, LogCallback
    from scratchllm.train.checkpoint import latest_checkpoint, load_checkpoint, unwrap_model
    from scratchllm.train.distributed import parallelize, setup_distributed, teardown_distributed
    from scratchllm.train.logging import MetricsLogger, flops_per_token, peak_flops
    from scratchllm.train.loop import Trainer, evaluate_loss
    from scratchllm.train.optim import build_adamw
    from scratchllm.train.schedule import WarmupCosineSchedule

    # 1. processes, device, precision
    env = setup_distributed(train.device)
    say = (log or _stderr) if env.is_main else (lambda _msg: None)
    out_dir = Path(out_dir)
    data = _as_data_spec(data)
    try:
        precision = resolve_precision(train.precision, env.device)

        # 2. data: the model's context length decides the window size, so read meta.json first
        from scratchllm.data.shards import load_meta

        meta_path = data.dirs[0] / "meta.json"
        meta = load_meta(data.dirs[0])
        if isinstance(model, str):
            model = ModelSpec(preset=model)
        model_cfg = model.build(int(meta["vocab_size"])) if isinstance(model, ModelSpec) else model
        if model_cfg.vocab_size < int(meta["vocab_size"]):
            raise ScratchLLMError(
                f"model vocab_size {model_cfg.vocab_size} is smaller than the data's ({meta['vocab_size']}, "
                f"{meta_path})"
            )
        ctx = model_cfg.context_length
        accum = train.grad_accum_steps(ctx, env.world_size)
        reader_args = dict(
            context_length=ctx, batch_size=train.micro_batch_size, rank=env.rank, world=env.world_size
        )
        batches = open_reader(data, data.train_split, seed=train.seed, random=True, **reader_args)
        eval_sets = {
            "train": open_reader(data, data.train_split, seed=train.seed + 1, random=True, **reader_args)
        }
        try:
            eval_sets["val"] = open_reader(data, data.val_split, seed=train.seed, random=False, **reader_args)
        except ScratchLLMError as exc:
            say(f"no {data.val_split!r} split ({exc}); validation loss is measured on the train split")
            eval_sets["val"] = open_reader(
                data, data.train_split, seed=train.seed + 2, random=True, **reader_args
            )

        # run folder: settings, tokenizer copy
        tokenizer_source = Path(tokenizer_dir) if tokenizer_dir else _tokenizer_from_meta(meta, meta_path)
        run_tokenizer = out_dir / "tokenizer"
        run_info = {
            "model": model_cfg.to_dict(),
            "data": {**asdict(data), "dirs": [str(d) for d in data.dirs]},
            "train": train.to_dict(),
            "precision": precision,
            "world_size": env.world_size,
            "grad_accum_steps": accum,
            "tokenizer": "tokenizer",
        }
        if env.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            _copy_tokenizer(tokenizer_source, run_tokenizer)
            (out_dir / "run.json").write_text(json.dumps(run_info, indent=1), encoding="utf-8")

        # 3. model: same seed on every rank gives the same initial weights
        torch.manual_seed(train.seed)
        net = GPTModel(model_cfg).to(env.device)
        n_params = sum(p.numel() for p in net.parameters())
        # Attention's own FLOPs scale with the query heads' width (n_heads * head_dim); grouped-query attention
        # shares keys/values but every query head still scores every position. SwiGLU is in the 6N term.
        fpt = flops_per_token(net, n_layers=model_cfg.n_layers, emb_dim=model_cfg.attn_dim, context_length=ctx)
        torch.manual_seed(train.seed + env.rank)  # dropout differs per rank
        say(
            f"model: {n_params:,} parameters, {model_cfg.n_layers} layers x {model_cfg.emb_dim} wide, context {ctx}; "
            f"{env.world_size} process(es) on {env.device}, {precision}; global batch "
            f"{train.micro_batch_size * ctx * accum * env.world_size:,} tokens "
            f"({train.micro_batch_size} x {ctx} x {accum} accumulation x {env.world_size} processes)"
        )

        # 4. parallelism, optimizer, schedule
        net = parallelize(
            net,
            env,
            mode=train.parallel,
            compile=train.compile,
            activation_checkpointing=train.activation_checkpointing,
        )
        optimizer = build_adamw(
            net, lr=train.lr, weight_decay=train.weight_decay, betas=(train.beta1, train.beta2), eps=train.eps
        )
        schedule = WarmupCosineSchedule(
            max_lr=train.lr, min_lr=train.min_lr, warmup_steps=train.warmup_steps, max_steps=train.max_steps
        )
        trainer = Trainer(
            net,
            optimizer,
            batches,
            max_steps=train.max_steps,
            schedule=schedule,
            grad_accum_steps=accum,
            grad_clip=train.grad_clip,
            precision=precision,
            device=env.device,
            stop_at_step=train.stop_at_step,
            max_seconds=None if train.max_minutes is None else 60.0 * train.max_minutes,
            skip_nonfinite=train.skip_nonfinite,
        )

        # 5. resume
        ckpt_root = out_dir / "checkpoints"
        resumed_from = None
        if not resume and latest_checkpoint(ckpt_root) is not None:
            raise ScratchLLMError(
                f"{ckpt_root}: holds checkpoints of an earlier run; pass --resume to continue it or choose "
                "another out_dir"
            )
        if resume:
            latest = latest_checkpoint(ckpt_root)
            if latest is None:
                say(f"--resume: no complete checkpoint in {ckpt_root}; starting from scratch")
            else:
                state = load_checkpoint(latest, model=net, optimizer=optimizer)
                trainer.load_state_dict(state)
                resumed_from = str(latest)
                say(
                    f"resumed from {latest} (step {trainer.state.step}, {trainer.state.tokens_seen:,} tokens)"
                )

        # 6. callbacks and the loop
        logger = MetricsLogger(
            out_dir, enabled=env.is_main, resume_step=trainer.state.step if resumed_from else None
        )
        peak = train.peak_flops or peak_flops(env.device, precision)
        prompt = train.sample_prompt if sample_prompt is None else sample_prompt
        tokenizer = None
        if prompt and train.sample_tokens > 0:
            from scratchllm.tokenizer import load as load_tokenizer

            tokenizer = load_tokenizer(run_tokenizer if run_tokenizer.exists() else tokenizer_source)

        # Evaluate and sample with the eager module (not the DDP/compile wrappers); FSDP2 needs its sharded one.
        eval_net = net if train.parallel == "fsdp" and env.distributed else unwrap_model(net)

        def sample() -> str | None:
            from scratchllm.generation import generate_text

            if not (env.is_main or train.parallel == "fsdp"):  # FSDP: every rank must run the forward passes
                return None
            net.eval()
            try:
                return generate_text(
                    eval_net,
                    tokenizer,
                    prompt,
                    max_new_tokens=train.sample_tokens,
                    temperature=0.8,
                    top_k=40,
                    seed=train.seed,
                )
            finally:
                net.train()

        def eval_loss(reader: Any) -> Callable[[], float]:
            return lambda: evaluate_loss(
                eval_net, reader, train.eval_batches, device=env.device, precision=precision
            )

        def extra_state() -> dict[str, Any]:
            return {"run": run_info, "tokenizer": "../../tokenizer", "resumed_from": resumed_from}

        def show_sample(text: str) -> None:
            say(f"sample: {prompt!r} -> {text!r}")

        evaluator = EvalCallback(
            train.eval_every,
            {name: eval_loss(reader) for name, reader in eval_sets.items()},
            sample=sample if tokenizer is not None else None,
            logger=logger,
            on_sample=show_sample,
        )
        checkpointer = CheckpointCallback(
            ckpt_root,
            train.save_every,
            train.keep_last,
            extra_state=extra_state,
            model_config={"format": "scratchllm", "model": model_cfg.to_dict()},
            log=say,
        )
        trainer.callbacks = [
            evaluator,
            LogCallback(logger, train.log_every, flops_per_token=fpt, peak_flops=peak),
            checkpointer,
        ]
        try:
            summary = trainer.fit()
        finally:
            logger.close()
        last_eval = evaluator.last or {}
        if summary["stop_reason"] == "time_budget":
            say(
                f"time budget of {train.max_minutes} min reached at step {summary['step']}; saved a checkpoint"
            )
        return {
            **summary,
            "out_dir": str(out_dir),
            "parameters": n_params,
            "precision": precision,
            "world_size": env.world_size,
            "train_loss": last_eval.get("train_loss"),
            "val_loss": last_eval.get("val_loss"),
            "val_perplexity": last_eval.get("val_perplexity"),
            "sample": last_eval.get("sample"),
            "checkpoint": str(checkpointer.last_path) if checkpointer.last_path else None,
            "resumed_from": resumed_from,
        }
    finally:
        teardown_distributed()
