"""The decoder (GPT-2 and Llama family) and its pieces: attention, norms, rotary embeddings, MLPs."""

from __future__ import annotations

from scratchllm.model.attention import (
    CausalAttention,
    KVCache,
    MultiHeadAttention,
    MultiHeadAttentionWrapper,
    Packing,
    SelfAttention,
    SimplifiedSelfAttention,
    StaticKVCache,
    simplified_self_attention,
)
from scratchllm.model.decoding_layout import optimize_for_decoding, set_weight_layout, weight_layout
from scratchllm.model.gpt import (
    GELU,
    FeedForward,
    GPTModel,
    LayerNorm,
    ModelSummary,
    RMSNorm,
    SwiGLU,
    TransformerBlock,
    model_summary,
)
from scratchllm.model.rope import RotaryEmbedding, apply_rope, apply_rope_complex, rope_frequencies

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
    "Packing",
    "RMSNorm",
    "RotaryEmbedding",
    "SelfAttention",
    "SimplifiedSelfAttention",
    "StaticKVCache",
    "SwiGLU",
    "TransformerBlock",
    "apply_rope",
    "apply_rope_complex",
    "model_summary",
    "optimize_for_decoding",
    "rope_frequencies",
    "set_weight_layout",
    "simplified_self_attention",
    "weight_layout",
]
