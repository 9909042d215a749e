"""Batches of variable-length examples for finetuning, in seeded epochs with a resumable position.

Finetuning data is a list of examples held in memory (thousands, not billions of tokens). Each epoch visits
them in an order drawn from ``seed + epoch``, so an interrupted run that resumes at (epoch, position) sees
exactly the batches the uninterrupted one would have: the whole state is two integers
(:meth:`ExampleBatches.state_dict`). A ``collate`` function turns a list of examples into tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import torch

from scratchllm.errors import ScratchLLMError

Example = TypeVar("Example")


class ExampleBatches(Generic[Example]):
    """``next_batch()`` over ``examples`` for the :class:`~scratchllm.train.loop.Trainer`.

    Args:
        examples: the dataset.
        batch_size: examples per batch; the last batch of an epoch is smaller unless ``drop_last``.
        collate: list of examples -> batch of tensors.
        shuffle: draw a new order every epoch (training); False keeps the file order (evaluation).
        seed: seed of the epoch orders.
        drop_last: skip an epoch's incomplete last batch (the book does so for training).
    """

    def __init__(
        self,
        examples: Sequence[Example],
        batch_size: int,
        collate: Callable[[list[Example]], Any],
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if not examples:
            raise ScratchLLMError("no examples to make batches of")
        if batch_size < 1:
            raise ScratchLLMError(f"batch size must be >= 1, got {batch_size}")
        self.examples = list(examples)
        self.batch_size = batch_size
        self.collate = collate
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last and len(self.examples) >= batch_size
        self.epoch = 0
        self.position = 0
        self._order = self._order_of(0)

    def __len__(self) -> int:
        """Batches per epoch."""
        n, b = len(self.examples), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def _order_of(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(len(self.examples)))
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(len(self.examples), generator=generator).tolist()

    def next_batch(self) -> Any:
        end = self.position + self.batch_size
        if self.position >= len(self.examples) or (self.drop_last and end > len(self.examples)):
            self.epoch, self.position = self.epoch + 1, 0
            self._order = self._order_of(self.epoch)
            end = self.batch_size
        indices = self._order[self.position : end]
        self.position = min(end, len(self.examples))
        return self.collate([self.examples[i] for i in indices])

    def batches(self) -> list[Any]:
        """One pass over the data in order (for evaluation), independent of the training position."""
        return [
            self.collate(self.examples[i : i + self.batch_size]) for i in range(0, len(self.examples), self.batch_size)
        ]

    def reset(self) -> None:
        self.epoch, self.position = 0, 0
        self._order = self._order_of(0)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "size": len(self.examples)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("size") != len(self.examples):
            raise ScratchLLMError(
                f"resume: the checkpoint was trained on {state.get('size')} examples, this data has "
                f"{len(self.examples)}; resume with the same data and split"
            )
        self.epoch, self.position, self.seed = int(state["epoch"]), int(state["position"]), int(state["seed"])
        self._order = self._order_of(self.epoch)
