"""The GPT model and its attention layers."""

from __future__ import annotations

from scratchllm.model.attention import (
    CausalAttention,
    KVCache,
    MultiHeadAttention,
    MultiHeadAttentionWrapper,
    SelfAttention,
    SimplifiedSelfAttention,
    simplified_self_attention,
)
from scratchllm.model.decoding_layout import optimize_for_decoding, set_weight_layout, weight_layout
from scratchllm.model.gpt import (
    GELU,
    FeedForward,
    GPTModel,
    LayerNorm,
    ModelSummary,
    TransformerBlock,
    model_summary,
)

__all__ = [
    "GELU",
    "CausalAttention",
    "FeedForward",
    "GPTModel",
    "KVCache",
    "LayerNorm",
    "ModelSummary",
    "MultiHeadAttention",
    "MultiHeadAttentionWrapper",
    "SelfAttention",
    "SimplifiedSelfAttention",
    "TransformerBlock",
    "model_summary",
    "optimize_for_decoding",
    "set_weight_layout",
    "simplified_self_attention",
    "weight_layout",
]
