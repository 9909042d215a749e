"""Helpers for the training tests: a tiny GPT and an in-memory batch source with the ShardReader interface."""

from __future__ import annotations

import pytest
import torch

from scratchllm.config import ModelConfig


class TensorReader:
    """Random (or sequential) windows over a token tensor; state is the window counter, as in ShardReader.

    Rank ``r`` of ``world_size`` with batch ``B`` returns rows ``[r*B:(r+1)*B]`` of what one process with batch
    ``world_size*B`` returns, which is the distributed rule ShardReader follows.
    """

    def __init__(self, tokens, *, context_length, batch_size, seed=0, random=True, rank=0, world_size=1):
        self.tokens = tokens
        self.context_length = context_length
        self.batch_size = batch_size
        self.seed = seed
        self.random = random
        self.rank = rank
        self.world_size = world_size
        self.batches_drawn = 0

    def next_batch(self):
        total = self.batch_size * self.world_size
        span = self.tokens.numel() - self.context_length - 1
        if self.random:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.batches_drawn)
            starts = torch.randint(0, span, (total,), generator=gen)
        else:
            first = self.batches_drawn * total * self.context_length
            starts = (first + torch.arange(total) * self.context_length) % span
        self.batches_drawn += 1
        starts = starts[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        x = torch.stack([self.tokens[s : s + self.context_length] for s in starts.tolist()])
        y = torch.stack([self.tokens[s + 1 : s + 1 + self.context_length] for s in starts.tolist()])
        return x.long(), y.long()

    def state_dict(self):
        return {"batches_drawn": self.batches_drawn}

    def load_state_dict(self, state):
        self.batches_drawn = state["batches_drawn"]

    def reset(self):
        self.batches_drawn = 0


@pytest.fixture
def tiny_config():
    def make(**overrides):
        base = dict(vocab_size=300, context_length=16, emb_dim=32, n_heads=2, n_layers=2, drop_rate=0.0)
        base.update(overrides)
        return ModelConfig(**base)

    return make


@pytest.fixture
def token_stream():
    gen = torch.Generator().manual_seed(123)
    return torch.randint(0, 300, (5000,), generator=gen)


@pytest.fixture
def reader_class():
    return TensorReader


@pytest.fixture(scope="session")
def shards(tmp_path_factory, shared_data):
    """Real prepared shards: 40 kB of Tiny Shakespeare, a 300-token BPE trained on it, a 10 % validation split."""
    from scratchllm.data.prepare import prepare
    from scratchllm.tokenizer import train_bpe

    root = tmp_path_factory.mktemp("shards")
    text = (shared_data / "tinyshakespeare" / "input.txt").read_bytes()[:40_000]
    (root / "shakespeare.txt").write_bytes(text)
    train_bpe(text.decode("utf-8", errors="ignore"), 300).save(root / "tokenizer")
    out = root / "shakespeare"
    prepare([root / "shakespeare.txt"], root / "tokenizer", out, val_fraction=0.1, progress=False)
    return out


# Tiny model and fast settings shared by the command-line tests.
TINY_ARGS = [
    "--model.preset", "tiny", "--model.context-length", "16", "--model.emb-dim", "32", "--model.n-heads", "2",
    "--model.n-layers", "2", "--train.micro-batch-size", "4", "--train.warmup-steps", "2", "--train.lr", "3e-3",
    "--train.precision", "fp32", "--train.eval-batches", "2", "--train.log-every", "1", "--train.sample-tokens", "8",
    "--train.peak-flops", "1e11",
]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_args():
    return list(TINY_ARGS)
