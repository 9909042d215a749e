"""Tiny random models with spiky weights (greedy choices not decided by float noise), shared by the engine and
server tests."""

from __future__ import annotations

import torch

from scratchllm.config import ModelConfig
from scratchllm.model import GPTModel

TINY_GPT = dict(vocab_size=257, context_length=96, emb_dim=32, n_heads=4, n_layers=2)
TINY_LLAMA = dict(
    vocab_size=257, context_length=96, emb_dim=32, n_heads=4, n_kv_heads=2, n_layers=2, hidden_dim=64,
    pos="rope", norm="rmsnorm", mlp="swiglu", bias=False, qkv_bias=False,
)


def spiky_model(kind: str = "gpt", seed: int = 0, **overrides) -> GPTModel:
    torch.manual_seed(seed)
    model = GPTModel(ModelConfig(**{**(TINY_GPT if kind == "gpt" else TINY_LLAMA), **overrides}))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    return model.eval()


class AsciiTokenizer:
    """Stand-in tokenizer whose every token is one printable ASCII character (or a newline), so a random
    model's output is readable text; ids 96..255 repeat the table, 256 is the end of sequence."""

    TABLE = "".join(chr(c) for c in range(32, 127)) + "\n"
    eot_id = 256
    vocab_size = 257

    def encode(self, text: str, allowed_special=()) -> list[int]:
        return [self.TABLE.index(c) for c in text]

    def decode_bytes(self, ids) -> bytes:
        return "".join(self.TABLE[i % len(self.TABLE)] for i in ids if i < 256).encode()

    def decode(self, ids) -> str:
        return self.decode_bytes(ids).decode()
