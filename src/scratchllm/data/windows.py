"""The teaching data path: one text, tokenized, cut into overlapping windows by a sliding window.

An LLM learns to predict the next token, so every training example is a window of ``max_length`` token ids (the
input) and the same window moved one token to the right (the target)::

    ids:     [ 40, 367, 2885, 1464, 1807, 3619, 402, ... ]
    input:   [ 40, 367, 2885, 1464 ]          target: [ 367, 2885, 1464, 1807 ]
    (stride 4) next input: [ 1807, 3619, 402, ... ]

``stride`` is how far the window moves between examples: ``stride == max_length`` uses every token once as an input,
a smaller stride gives overlapping (more, but correlated) examples. For corpora too large for memory use
``scratchllm prepare`` and :class:`scratchllm.data.shards.ShardReader` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from scratchllm.errors import ScratchLLMError


class SlidingWindowDataset(Dataset):
    """Windows of ``max_length`` ids starting every ``stride`` ids, each with its next-token target.

    The ids are kept once, as one tensor; windows are views cut on access, so memory does not grow with overlap.
    """

    def __init__(self, token_ids: Sequence[int] | torch.Tensor, max_length: int, stride: int) -> None:
        if max_length < 1 or stride < 1:
            raise ScratchLLMError(f"max_length and stride must be positive, got {max_length} and {stride}")
        self.ids = torch.as_tensor(token_ids, dtype=torch.long).flatten()
        if self.ids.numel() < max_length + 1:
            raise ScratchLLMError(
                f"text has {self.ids.numel()} tokens but one window needs max_length + 1 = {max_length + 1}; "
                "use a longer text or a smaller max_length"
            )
        self.max_length = max_length
        self.stride = stride
        # starts 0, stride, 2*stride, ... as long as the target (one token further) still fits
        self.num_windows = (self.ids.numel() - max_length - 1) // stride + 1

    def __len__(self) -> int:
        return self.num_windows

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -self.num_windows <= index < self.num_windows:
            raise IndexError(f"window {index} out of range (dataset has {self.num_windows})")
        start = (index % self.num_windows) * self.stride
        return (
            self.ids[start : start + self.max_length],
            self.ids[start + 1 : start + self.max_length + 1],
        )


def create_dataloader(
    text: str,
    tokenizer: Any,
    batch_size: int = 4,
    max_length: int = 256,
    stride: int = 128,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    seed: int | None = None,
) -> DataLoader:
    """Tokenize ``text`` (``<|endoftext|>`` allowed as a separator) and serve sliding windows in batches.

    ``seed`` fixes the shuffle order; without it the order follows torch's global RNG (``torch.manual_seed``).
    """
    ids = tokenizer.encode(text, allowed_special={"<|endoftext|>"})
    dataset = SlidingWindowDataset(ids, max_length, stride)
    if drop_last and len(dataset) < batch_size:
        raise ScratchLLMError(
            f"text gives {len(dataset)} windows, fewer than batch_size={batch_size} with drop_last=True; "
            "use a longer text, a smaller batch_size or stride, or drop_last=False"
        )
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=generator,
    )
