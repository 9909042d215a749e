"""Batches of variable-length examples for finetuning, in seeded epochs with a resumable position.

Finetuning data is a list of examples held in memory (thousands, not billions of tokens). Each epoch visits
them in an order drawn from ``seed + epoch``, so an interrupted run that resumes at (epoch, position) sees
exactly the batches the uninterrupted one would have: the whole state is two integers
(:meth:`ExampleBatches.state_dict`). A ``collate`` function turns a list of examples into tensors.

Under data parallelism every process draws the same order and takes its own slice of each *global* batch
(``world_size * batch_size`` examples), as pretraining's shard reader does: rank ``r`` gets examples
``[r * batch_size, (r + 1) * batch_size)`` of it, so two processes with batch 2 see what one with batch 4 sees.
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
        rank: this process's index under data parallelism.
        world_size: number of processes; each batch is this process's slice of a global batch.
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
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not examples:
            raise ScratchLLMError("no examples to make batches of")
        if batch_size < 1:
            raise ScratchLLMError(f"batch size must be >= 1, got {batch_size}")
        if world_size > 1 and not drop_last:
            raise ScratchLLMError("batches split across processes need drop_last (every process must get a batch)")
        if world_size > 1 and world_size * batch_size > len(examples):
            raise ScratchLLMError(
                f"{len(examples)} examples are fewer than one global batch ({world_size} x {batch_size})"
            )
        self.examples = list(examples)
        self.rank, self.world_size = rank, world_size
        self.batch_size = batch_size
        self.collate = collate
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last and len(self.examples) >= batch_size
        self.epoch = 0
        self.position = 0
        self._order = self._order_of(0)

    def __len__(self) -> int:
        """Batches per epoch (global batches, when split across processes)."""
        n, b = len(self.examples), self.batch_size * self.world_size
        return n // b if self.drop_last else -(-n // b)

    def _order_of(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(len(self.examples)))
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(len(self.examples), generator=generator).tolist()

    def next_batch(self) -> Any:
        size = self.batch_size * self.world_size  # the global batch
        end = self.position + size
        if self.position >= len(self.examples) or (self.drop_last and end > len(self.examples)):
            self.epoch, self.position = self.epoch + 1, 0
            self._order = self._order_of(self.epoch)
            end = size
        mine = self.position + self.rank * self.batch_size
        indices = self._order[mine : min(mine + self.batch_size, end)]
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
