"""Tiny models and a tiny tokenizer for the open-weights tests (importable because tests/ is on sys.path).

A model trained here is a :class:`GPTModel` plus our byte-level BPE tokenizer; these helpers make small ones of
both families in well under a second, "trained" sixty optimizer steps (a second or two), enough to continue "Once upon a time" with
" there was a little model that learned".
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from scratchllm.config import ModelConfig
from scratchllm.model import GPTModel
from scratchllm.tokenizer import BPETokenizer, train_bpe
from scratchllm.weights import save_model

TEXT = (
    "Once upon a time there was a little model that learned to write. It read stories about cats and dogs, "
    "about the sea and the sky, and wrote them again in its own words. 中文也可以。 def add(a, b): return a + b\n"
)


@lru_cache(maxsize=1)
def tiny_tokenizer() -> BPETokenizer:
    """Byte-level BPE with 300 ids (256 bytes, 43 merges, ``<|endoftext|>``), trained on :data:`TEXT`."""
    return train_bpe(TEXT * 10, 300, special_tokens=("<|endoftext|>",), workers=1)


def tiny_config(family: str, vocab_size: int = 300) -> ModelConfig:
    """A two-layer GPT-2 (``gpt2``) or Llama (``llama``, grouped-query 4/2 heads) of width 32."""
    shape = {"vocab_size": vocab_size, "context_length": 64, "emb_dim": 32, "n_heads": 4, "n_layers": 2}
    if family == "llama":
        return ModelConfig.from_preset("llama-tiny", **shape, n_kv_heads=2, hidden_dim=64)
    return ModelConfig(**shape)


def trained(config: ModelConfig, steps: int = 60, seed: int = 0) -> GPTModel:
    """A model of ``config`` after a few AdamW steps of next-token prediction on :data:`TEXT` (eval mode)."""
    torch.manual_seed(seed)
    model = GPTModel(config)
    ids = torch.tensor(tiny_tokenizer().encode(TEXT * 2)[: 4 * 33]).view(4, 33)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        logits = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def save_checkpoint(model: GPTModel, folder: Path) -> Path:
    """Our checkpoint folder with its tokenizer in ``folder/tokenizer``."""
    save_model(model, folder)
    tiny_tokenizer().save(folder / "tokenizer")
    return folder
