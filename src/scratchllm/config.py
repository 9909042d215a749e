"""Configuration dataclasses.

A config is plain data: it can be written to JSON next to a checkpoint, loaded back, and checked field by field,
so a typo in a YAML preset is an error that names the field rather than a silently ignored value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

from scratchllm.errors import ScratchLLMError

# How a model's weights are held for generation (scratchllm.model.quantize): float32, bfloat16, or 8-bit
# weight-only (int8 weights with one scale per output row, bf16 activations).
WeightFormat = Literal["fp32", "bf16", "int8"]
WEIGHT_FORMATS: tuple[str, ...] = get_args(WeightFormat)


def check_dropout(what: str, rate: float) -> float:
    """``rate`` as a float, or a :class:`ScratchLLMError` naming ``what``: a dropout rate is in [0, 1)
    (1 would zero every activation)."""
    if not 0.0 <= float(rate) < 1.0:
        raise ScratchLLMError(f"{what} must be in [0, 1), got {rate!r}")
    return float(rate)


@dataclass
class ModelConfig:
    """Shape of a decoder-only transformer: GPT-2 by default, the Llama family by a handful of switches.

    GPT-2 and Llama-style models (Llama 3, SmolLM2, Qwen2/2.5, Qwen3) share one skeleton: embedding, a stack of
    pre-norm attention + feed-forward blocks, a final norm and an LM head. They differ in a few named pieces,
    and each piece has one field here (the defaults are GPT-2's, so older ``config.json`` files load as before):

    =================  =====================  ======================================================
    field              GPT-2                  Llama family
    =================  =====================  ======================================================
    ``pos``            ``learned`` table      ``rope``: rotary embedding of q and k (``rope_theta``)
    ``norm``           ``layernorm``          ``rmsnorm`` (no mean, no bias)
    ``mlp``            ``gelu`` (4x wide)     ``swiglu``: ``down(silu(gate(x)) * up(x))``
    ``n_kv_heads``     = ``n_heads``          fewer key/value heads (grouped-query attention)
    ``bias``           True                   False (no bias outside q/k/v)
    ``qkv_bias``       True                   False (Llama, Qwen3) or True (Qwen2)
    ``qk_norm``        False                  True in Qwen3 (RMSNorm of each q/k head before RoPE)
    =================  =====================  ======================================================

    Attributes:
        vocab_size: number of token ids the embedding and the LM head cover.
        context_length: longest sequence the model accepts (the learned position table's size; for RoPE,
            the KV cache's default length).
        emb_dim: width of the residual stream (d_model).
        n_heads: query heads per attention layer.
        n_layers: number of transformer blocks.
        drop_rate: dropout on embeddings, attention weights and residual branches (0 for inference).
        qkv_bias: whether the query/key/value projections have a bias (GPT-2 and Qwen2 have one).
        bias: whether every other linear layer (attention output, feed-forward) and the LayerNorms have a bias
            (GPT-2 does; the Llama family has none).
        tie_embeddings: share the token embedding matrix with the LM head.
        norm_eps: epsilon of every LayerNorm/RMSNorm (GPT-2 and Llama use 1e-5, Qwen 1e-6).
        norm: ``layernorm`` (GPT-2) or ``rmsnorm`` (Llama family).
        mlp: ``gelu`` (GPT-2: Linear, GELU-tanh, Linear) or ``swiglu`` (Llama family: gated SiLU).
        pos: ``learned`` (a trained position table, GPT-2) or ``rope`` (rotary position embedding).
        n_kv_heads: key/value heads; must divide n_heads (n_heads: multi-head, 1: multi-query attention).
            Default: n_heads.
        head_dim: width of each attention head. Default: emb_dim // n_heads (Qwen3 sets it explicitly).
        hidden_dim: width of the feed-forward layer. Default: 4 * emb_dim (GPT-2).
        qk_norm: RMSNorm each query and key head before RoPE (Qwen3).
        rope_theta: base of the rotary frequencies (10,000 in the RoPE paper; 500,000 in Llama 3).
        rope_scaling: None, or Llama 3.1's frequency scaling for long contexts:
            ``{"rope_type": "llama3", "factor", "low_freq_factor", "high_freq_factor",
            "original_max_position_embeddings"}``.
    """

    vocab_size: int = 50257
    context_length: int = 1024
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.0
    qkv_bias: bool = True
    bias: bool = True
    tie_embeddings: bool = True
    norm_eps: float = 1e-5
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    mlp: Literal["gelu", "swiglu"] = "gelu"
    pos: Literal["learned", "rope"] = "learned"
    n_kv_heads: int | None = None
    head_dim: int | None = None
    hidden_dim: int | None = None
    qk_norm: bool = False
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        # Derived defaults are filled in once, so code reads cfg.head_dim etc. and config.json records them.
        self._check_positive("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers")
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.head_dim is None:
            if self.emb_dim % self.n_heads != 0:
                raise ScratchLLMError(
                    f"model config: emb_dim ({self.emb_dim}) must be divisible by n_heads ({self.n_heads}), "
                    "or head_dim given"
                )
            self.head_dim = self.emb_dim // self.n_heads
        if self.hidden_dim is None:
            self.hidden_dim = 4 * self.emb_dim
        self.validate()

    def _check_positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ScratchLLMError(f"model config: {name} must be a positive integer, got {value!r}")

    def validate(self) -> None:
        """Raise :class:`ScratchLLMError` naming the first field whose value cannot build a model."""
        shape = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers")
        self._check_positive(*shape, "n_kv_heads", "head_dim", "hidden_dim")
        if self.n_heads % self.n_kv_heads != 0:
            raise ScratchLLMError(
                f"model config: n_kv_heads ({self.n_kv_heads}) must divide n_heads ({self.n_heads})"
            )
        check_dropout("model config: drop_rate", self.drop_rate)
        for name, allowed in (
            ("norm", ("layernorm", "rmsnorm")),
            ("mlp", ("gelu", "swiglu")),
            ("pos", ("learned", "rope")),
        ):
            if getattr(self, name) not in allowed:
                raise ScratchLLMError(
                    f"model config: {name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )
        if self.pos == "rope" and self.head_dim % 2:
            raise ScratchLLMError(f"model config: head_dim ({self.head_dim}) must be even for rotary embeddings")
        if not self.norm_eps > 0:
            raise ScratchLLMError(f"model config: norm_eps must be > 0, got {self.norm_eps!r}")
        if not self.rope_theta > 0:
            raise ScratchLLMError(f"model config: rope_theta must be > 0, got {self.rope_theta!r}")
        if self.rope_scaling is not None:
            self._validate_rope_scaling()

    def _validate_rope_scaling(self) -> None:
        scaling = self.rope_scaling
        keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
        expected = f'null or {{"rope_type": "llama3", {", ".join(keys)}}}'
        if self.pos != "rope":
            raise ScratchLLMError('model config: rope_scaling needs pos: "rope"')
        if not isinstance(scaling, dict) or scaling.get("rope_type") != "llama3":
            raise ScratchLLMError(f"model config: rope_scaling must be {expected}, got {scaling!r}")
        unknown = sorted(set(scaling) - {"rope_type", *keys})
        if unknown:
            raise ScratchLLMError(f"model config: rope_scaling has unknown key(s) {', '.join(unknown)}")
        for key in keys:
            value = scaling.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ScratchLLMError(f"model config: rope_scaling.{key} must be a positive number, got {value!r}")
        if scaling["high_freq_factor"] <= scaling["low_freq_factor"]:
            raise ScratchLLMError("model config: rope_scaling.high_freq_factor must exceed low_freq_factor")

    @property
    def attn_dim(self) -> int:
        """Width of all query heads together (``n_heads * head_dim``; emb_dim except when head_dim is set)."""
        return self.n_heads * self.head_dim

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model config") -> ModelConfig:
        """Build from a mapping, rejecting unknown keys so typos never pass silently.

        ``layer_norm_eps`` (the name before the Llama family arrived) is read as ``norm_eps``.
        """
        data = dict(data)
        if "layer_norm_eps" in data and "norm_eps" not in data:
            data["norm_eps"] = data.pop("layer_norm_eps")
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
# The Llama family: RoPE, RMSNorm, SwiGLU, grouped-query attention, no biases. Shapes from each model's
# published config.json; tests/model/test_presets.py checks the parameter counts against transformers.
_LLAMA = {"pos": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": False, "qkv_bias": False}
_QWEN = {**_LLAMA, "vocab_size": 151936, "rope_theta": 1_000_000.0, "norm_eps": 1e-6, "tie_embeddings": True}
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "gpt2-small": {**_GPT2, "emb_dim": 768, "n_heads": 12, "n_layers": 12},
    "gpt2-medium": {**_GPT2, "emb_dim": 1024, "n_heads": 16, "n_layers": 24},
    "gpt2-large": {**_GPT2, "emb_dim": 1280, "n_heads": 20, "n_layers": 36},
    "gpt2-xl": {**_GPT2, "emb_dim": 1600, "n_heads": 25, "n_layers": 48},
    # CPU-sized shapes for learning and tests; vocab_size is normally overridden by the tokenizer's.
    "tiny": {"vocab_size": 4096, "context_length": 128, "emb_dim": 128, "n_heads": 4, "n_layers": 4},
    "small-cpu": {"vocab_size": 4096, "context_length": 256, "emb_dim": 256, "n_heads": 8, "n_layers": 6},
    "llama-tiny": {
        **_LLAMA,
        "vocab_size": 4096,
        "context_length": 256,
        "emb_dim": 128,
        "n_heads": 4,
        "n_kv_heads": 2,
        "n_layers": 4,
        "hidden_dim": 352,
        "tie_embeddings": True,
    },
    "smollm2-135m": {
        **_LLAMA,
        "vocab_size": 49152,
        "context_length": 8192,
        "emb_dim": 576,
        "n_heads": 9,
        "n_kv_heads": 3,
        "n_layers": 30,
        "hidden_dim": 1536,
        "rope_theta": 100_000.0,
        "tie_embeddings": True,
    },
    "smollm2-360m": {
        **_LLAMA,
        "vocab_size": 49152,
        "context_length": 8192,
        "emb_dim": 960,
        "n_heads": 15,
        "n_kv_heads": 5,
        "n_layers": 32,
        "hidden_dim": 2560,
        "rope_theta": 100_000.0,
        "tie_embeddings": True,
    },
    "llama-3.2-1b": {
        **_LLAMA,
        "vocab_size": 128256,
        "context_length": 131072,
        "emb_dim": 2048,
        "n_heads": 32,
        "n_kv_heads": 8,
        "n_layers": 16,
        "hidden_dim": 8192,
        "rope_theta": 500_000.0,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        "tie_embeddings": True,
    },
    "qwen2.5-0.5b": {
        **_QWEN,
        "qkv_bias": True,
        "context_length": 32768,
        "emb_dim": 896,
        "n_heads": 14,
        "n_kv_heads": 2,
        "n_layers": 24,
        "hidden_dim": 4864,
    },
    "qwen3-0.6b": {
        **_QWEN,
        "qk_norm": True,
        "context_length": 40960,
        "emb_dim": 1024,
        "n_heads": 16,
        "n_kv_heads": 8,
        "head_dim": 128,
        "n_layers": 28,
        "hidden_dim": 3072,
    },
}


# --------------------------------------------------------------------------------------------- training
@dataclass
class ModelSpec:
    """Which model to train: a named preset, optionally reshaped field by field.

    The vocabulary size is never set here: it always comes from the tokenizer the data was prepared with.

    Attributes:
        preset: model shape from the preset table (GPT-2: gpt2-small, tiny, small-cpu, ...; Llama family:
            llama-tiny, smollm2-135m, llama-3.2-1b, qwen2.5-0.5b, qwen3-0.6b, ...).
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


@dataclass
class LoRAConfig:
    """LoRA settings (:mod:`scratchllm.model.lora`); saved with adapters so they can be re-applied.

    Attributes:
        rank: ``r``, the inner dimension of ``B A``.
        alpha: the update is scaled by ``alpha / rank``.
        dropout: dropout on the LoRA branch's input while training.
        targets: friendly names (attn, mlp, all) or module names/globs (``att.qkv``, ``blocks.1*.ff.fc``).
        base_bf16: keep the frozen weights of the adapted layers in bfloat16 (half their memory).
    """

    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = dataclasses.field(default_factory=lambda: ["all"])
    base_bf16: bool = False
    #: the module names the targets matched (filled in by :func:`inject_lora`; not a setting)
    modules: list[str] = dataclasses.field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ScratchLLMError(f"lora rank: must be >= 1, got {self.rank}")
        if self.alpha <= 0:
            raise ScratchLLMError(f"lora alpha: must be > 0, got {self.alpha}")
        check_dropout("lora dropout", self.dropout)
        if isinstance(self.targets, str):
            self.targets = [self.targets]
        if not self.targets:
            raise ScratchLLMError("lora targets: name at least one (attn, mlp, all, or module names)")

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> LoRAConfig:
        """Settings saved by :meth:`to_dict` (``modules`` included)."""
        data = dict(data)
        modules = data.pop("modules", [])
        try:
            config = cls(**data)
        except TypeError as exc:
            raise ScratchLLMError(f"{where}: lora settings: {exc}") from None
        config.modules = list(modules)
        return config
