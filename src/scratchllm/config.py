"""Configuration dataclasses.

A config is plain data: it can be written to JSON next to a checkpoint, loaded back, and checked field by field,
so a typo in a YAML preset is an error that names the field rather than a silently ignored value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from scratchllm.errors import ScratchLLMError


@dataclass
class ModelConfig:
    """Shape of a GPT model.

    Attributes:
        vocab_size: number of token ids the embedding and the LM head cover.
        context_length: longest sequence the learned position embedding supports.
        emb_dim: width of the residual stream (d_model).
        n_heads: attention heads per block; must divide emb_dim.
        n_layers: number of transformer blocks.
        drop_rate: dropout on embeddings, attention weights and residual branches (0 for inference).
        qkv_bias: whether the query/key/value projections have a bias (GPT-2 has one).
        tie_embeddings: share the token embedding matrix with the LM head (GPT-2 does).
        layer_norm_eps: epsilon of every LayerNorm (GPT-2 uses 1e-5).
    """

    vocab_size: int = 50257
    context_length: int = 1024
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.0
    qkv_bias: bool = True
    tie_embeddings: bool = True
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ScratchLLMError` naming the first field whose value cannot build a model."""
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ScratchLLMError(f"model config: {name} must be a positive integer, got {value!r}")
        if self.emb_dim % self.n_heads != 0:
            raise ScratchLLMError(
                f"model config: emb_dim ({self.emb_dim}) must be divisible by n_heads ({self.n_heads})"
            )
        if not 0.0 <= float(self.drop_rate) < 1.0:
            raise ScratchLLMError(f"model config: drop_rate must be in [0, 1), got {self.drop_rate!r}")

    @property
    def head_dim(self) -> int:
        return self.emb_dim // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model config") -> ModelConfig:
        """Build from a mapping, rejecting unknown keys so typos never pass silently."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ScratchLLMError(
                f"{source}: unknown field(s) {', '.join(unknown)}; expected some of {', '.join(sorted(known))}"
            )
        return cls(**data)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """A named preset (see :data:`MODEL_PRESETS`) with optional field overrides."""
        if name not in MODEL_PRESETS:
            raise ScratchLLMError(
                f"unknown model preset {name!r}; choose one of {', '.join(sorted(MODEL_PRESETS))}"
            )
        return cls.from_dict({**MODEL_PRESETS[name], **overrides}, source=f"preset {name!r}")


# GPT-2 shapes from the released checkpoints (Radford et al., 2019). With tied embeddings and qkv bias,
# gpt2-small has exactly 124,439,808 parameters, as the Hugging Face checkpoint reports.
_GPT2 = {"vocab_size": 50257, "context_length": 1024, "qkv_bias": True, "tie_embeddings": True}
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "gpt2-small": {**_GPT2, "emb_dim": 768, "n_heads": 12, "n_layers": 12},
    "gpt2-medium": {**_GPT2, "emb_dim": 1024, "n_heads": 16, "n_layers": 24},
    "gpt2-large": {**_GPT2, "emb_dim": 1280, "n_heads": 20, "n_layers": 36},
    "gpt2-xl": {**_GPT2, "emb_dim": 1600, "n_heads": 25, "n_layers": 48},
    # CPU-sized shapes for learning and tests; vocab_size is normally overridden by the tokenizer's.
    "tiny": {"vocab_size": 4096, "context_length": 128, "emb_dim": 128, "n_heads": 4, "n_layers": 4},
    "small-cpu": {"vocab_size": 4096, "context_length": 256, "emb_dim": 256, "n_heads": 8, "n_layers": 6},
}


# --------------------------------------------------------------------------------------------- training
@dataclass
class ModelSpec:
    """Which model to train: a named preset, optionally reshaped field by field.

    The vocabulary size is never set here: it always comes from the tokenizer the data was prepared with.

    Attributes:
        preset: model shape from the preset table (gpt2-small, gpt2-medium, tiny, small-cpu, ...).
        context_length: override the preset's context length.
        emb_dim: override the preset's embedding width.
        n_heads: override the preset's number of attention heads.
        n_layers: override the preset's number of transformer blocks.
        drop_rate: dropout rate while training (0 disables dropout).
        qkv_bias: override whether query/key/value projections have a bias.
        tie_embeddings: override whether the LM head shares the token embedding matrix.
    """

    preset: str = "tiny"
    context_length: int | None = None
    emb_dim: int | None = None
    n_heads: int | None = None
    n_layers: int | None = None
    drop_rate: float = 0.0
    qkv_bias: bool | None = None
    tie_embeddings: bool | None = None

    def __post_init__(self) -> None:
        if self.preset not in MODEL_PRESETS:
            raise ScratchLLMError(
                f"model.preset: unknown preset {self.preset!r}; choose one of {', '.join(sorted(MODEL_PRESETS))}"
            )

    def build(self, vocab_size: int) -> ModelConfig:
        """The :class:`ModelConfig` for a tokenizer with ``vocab_size`` ids."""
        overrides = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "preset" and getattr(self, f.name) is not None
        }
        return ModelConfig.from_preset(self.preset, vocab_size=vocab_size, **overrides)


@dataclass
class DataSpec:
    """Prepared token shards to train on: one folder, or several mixed by weight.

    Attributes:
        dirs: folders written by `scratchllm prepare` (each with meta.json and shards).
        weights: sampling weight of each folder when there are several (default: equal weights).
        train_split: split name to train on.
        val_split: split name to measure validation loss on (the train split when a folder has no such split).
    """

    dirs: list[Path] = dataclasses.field(default_factory=list)
    weights: list[float] | None = None
    train_split: str = "train"
    val_split: str = "val"

    def __post_init__(self) -> None:
        self.dirs = [Path(d) for d in self.dirs]
        if not self.dirs:
            raise ScratchLLMError("data.dirs: give at least one prepared shard folder")
        if self.weights is not None:
            if len(self.weights) != len(self.dirs):
                raise ScratchLLMError(
                    f"data.weights: {len(self.weights)} weight(s) for {len(self.dirs)} folder(s); give one per folder"
                )
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ScratchLLMError(f"data.weights: must be >= 0 with a positive sum, got {self.weights}")


@dataclass
class TrainConfig:
    """How to train: batch, optimizer, schedule, precision, evaluation and checkpoints.

    Attributes:
        micro_batch_size: sequences per forward/backward pass on each process.
        global_batch_tokens: tokens per optimizer step over all processes; must be a multiple of
            micro_batch_size * context_length * world_size, the rest is gradient accumulation
            (default: one micro-batch per process, no accumulation).
        max_steps: optimizer steps; the learning-rate schedule is planned on this number.
        stop_at_step: stop (with a checkpoint) after this step without changing the schedule, to train a long
            schedule in several sittings with --resume.
        max_minutes: stop cleanly (with a checkpoint) once this many minutes of training have passed.
        reschedule: with --resume, apply changed lr, min_lr, warmup_steps, max_steps, weight_decay, betas or
            eps from the resumed step on (without it such a resume is refused, naming each change).
        lr: peak learning rate, reached at the end of warmup.
        min_lr: learning-rate floor the cosine decays to.
        warmup_steps: steps of linear warmup from zero.
        weight_decay: AdamW decoupled weight decay, applied to matmul weights only (not to biases, norms or
            embeddings).
        beta1: AdamW first-moment decay.
        beta2: AdamW second-moment decay.
        eps: AdamW epsilon.
        grad_clip: clip the global gradient norm to this value (0 disables clipping).
        precision: fp32, bf16 (autocast; weights and optimizer stay fp32), or auto (bf16 where the hardware
            supports it natively).
        compile: compile the model with torch.compile.
        seed: seed for weights, dropout and data order.
        device: cpu, cuda, cuda:N or auto.
        parallel: with several processes, ddp (replicate the model) or fsdp (shard it with FSDP2).
        activation_checkpointing: recompute each block's activations in the backward pass to save memory.
        eval_every: evaluate (train/val loss, sample) every this many steps (0: only at the end).
        eval_batches: batches in each fixed evaluation set.
        sample_prompt: prompt of the text sample printed at each evaluation ('' disables samples).
        sample_tokens: tokens generated for that sample.
        log_every: print a progress line and write a metrics row every this many steps.
        save_every: write a checkpoint every this many steps (0: only at the end).
        keep_last: number of newest checkpoints kept (the best one by validation loss is kept as well).
        skip_nonfinite: skip optimizer steps whose loss or gradient norm is NaN/inf instead of stopping.
        peak_flops: peak FLOP/s of one device for the MFU estimate (default: measured or looked up).
    """

    micro_batch_size: int = 8
    global_batch_tokens: int | None = None
    max_steps: int = 1000
    stop_at_step: int | None = None
    max_minutes: float | None = None
    reschedule: bool = False
    lr: float = 6e-4
    min_lr: float = 6e-5
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    precision: Literal["fp32", "bf16", "auto"] = "auto"
    compile: bool = False
    seed: int = 1337
    device: str = "auto"
    parallel: Literal["ddp", "fsdp"] = "ddp"
    activation_checkpointing: bool = False
    eval_every: int = 100
    eval_batches: int = 10
    sample_prompt: str = "The"
    sample_tokens: int = 40
    log_every: int = 10
    save_every: int = 500
    keep_last: int = 2
    skip_nonfinite: bool = False
    peak_flops: float | None = None

    def __post_init__(self) -> None:
        positive = ("micro_batch_size", "max_steps", "eval_batches", "log_every")
        for name in positive:
            value = getattr(self, name)
            if value < 1:
                raise ScratchLLMError(f"train.{name}: must be >= 1, got {value}")
        non_negative = (
            "warmup_steps",
            "weight_decay",
            "grad_clip",
            "eval_every",
            "save_every",
            "sample_tokens",
        )
        for name in non_negative:
            value = getattr(self, name)
            if value < 0:
                raise ScratchLLMError(f"train.{name}: must be >= 0, got {value}")
        if self.keep_last < 1:
            raise ScratchLLMError(f"train.keep_last: must be >= 1, got {self.keep_last}")
        if not 0 < self.lr or not 0 <= self.min_lr <= self.lr:
            raise ScratchLLMError(
                f"train.lr / train.min_lr: need 0 <= min_lr <= lr and lr > 0, got {self.lr}, {self.min_lr}"
            )
        if self.global_batch_tokens is not None and self.global_batch_tokens < 1:
            raise ScratchLLMError(f"train.global_batch_tokens: must be >= 1, got {self.global_batch_tokens}")
        if self.stop_at_step is not None and self.stop_at_step < 1:
            raise ScratchLLMError(f"train.stop_at_step: must be >= 1, got {self.stop_at_step}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ScratchLLMError(f"train.max_minutes: must be > 0, got {self.max_minutes}")

    def grad_accum_steps(self, context_length: int, world_size: int = 1) -> int:
        """Micro-batches per optimizer step on each process so the step sees ``global_batch_tokens`` tokens."""
        per_pass = self.micro_batch_size * context_length * world_size
        if self.global_batch_tokens is None:
            return 1
        if self.global_batch_tokens % per_pass != 0:
            raise ScratchLLMError(
                f"train.global_batch_tokens: {self.global_batch_tokens} is not a multiple of micro_batch_size "
                f"({self.micro_batch_size}) x context_length ({context_length}) x processes ({world_size}) "
                f"= {per_pass}"
            )
        return self.global_batch_tokens // per_pass

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
