"""Configuration dataclasses.

A config is plain data: it can be written to JSON next to a checkpoint, loaded back, and checked field by field,
so a typo in a YAML preset is an error that names the field rather than a silently ignored value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

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
