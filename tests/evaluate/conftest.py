"""Evaluation tests run tiny models on one torch thread."""

from __future__ import annotations

import pytest
import torch

from scratchllm.config import ModelConfig
from scratchllm.model import GPTModel


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    pass


def make_tiny_model(family: str = "gpt2", context_length: int = 64, vocab_size: int = 97, seed: int = 0) -> GPTModel:
    """A small random model: GPT-2 style, or Llama style (RoPE, RMSNorm, SwiGLU, grouped-query attention)."""
    torch.manual_seed(seed)
    extra = {}
    if family == "llama":
        extra = dict(norm="rmsnorm", mlp="swiglu", pos="rope", n_kv_heads=2, bias=False, qkv_bias=False)
    config = ModelConfig(
        vocab_size=vocab_size, context_length=context_length, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0,
        **extra,
    )
    return GPTModel(config).eval()


@pytest.fixture
def tiny_model():
    """The :func:`make_tiny_model` factory."""
    return make_tiny_model
