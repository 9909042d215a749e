"""Tiny models of both families for the finetuning tests."""

from __future__ import annotations

import torch

from scratchllm.config import ModelConfig
from scratchllm.model import GPTModel


def tiny_config(family: str = "llama", **overrides) -> ModelConfig:
    """A 2-layer model of either family, small enough for sub-second tests."""
    if family == "llama":
        base = dict(vocab_size=96, context_length=32, emb_dim=32, n_heads=4, n_kv_heads=2, n_layers=2, hidden_dim=48)
        return ModelConfig.from_preset("llama-tiny", **{**base, **overrides})
    base = dict(vocab_size=96, context_length=32, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)
    return ModelConfig(**{**base, **overrides})


def tiny_model(family: str = "llama", seed: int = 0, **overrides) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(tiny_config(family, **overrides)).eval()


def tiny_checkpoint(folder, family: str = "llama", text: str = "", context_length: int = 64, **overrides):
    """Our checkpoint folder (model + a byte-level BPE tokenizer trained on ``text``) of a tiny model."""
    from scratchllm.tokenizer.bpe_train import train_bpe
    from scratchllm.weights import save_model

    corpus = text or " ".join(["good happy great fine day", "bad awful sad poor night", "### Instruction:"] * 20)
    tokenizer = train_bpe(corpus, vocab_size=300, workers=1)
    model = tiny_model(family, vocab_size=tokenizer.vocab_size, context_length=context_length, **overrides)
    save_model(model, folder)
    tokenizer.save(folder / "tokenizer")
    return folder
