"""Train on several prepared datasets at once, each row drawn from a source chosen by weight.

GPT-3 (Brown et al., 2020, table 2.2) did not sample its sources in proportion to their size: the small,
high-quality ones (Wikipedia, books) were given more weight than their share of tokens, so over a run they are
seen several times while the huge web crawl is seen less than once. :func:`effective_epochs` computes that
"epochs elapsed" column for any plan, and :class:`MixtureReader` carries it out.

Determinism follows :class:`~scratchllm.data.shards.ShardReader`: global batch ``k`` depends only on the seed and
``k`` (the source of each row from one generator, the windows from each source's own reader), so the reader
resumes from a counter and rank ``r`` of ``W`` returns rows ``[r*B:(r+1)*B]`` of the single-process batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from scratchllm.data.shards import ShardReader, load_meta, reader_position, saved_position
from scratchllm.errors import ScratchLLMError

if TYPE_CHECKING:
    import torch


def _normalise(weights: Sequence[float], what: str = "weights") -> np.ndarray:
    w = np.asarray([float(x) for x in weights], dtype=np.float64)
    if w.size == 0 or np.any(~np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ScratchLLMError(
            f"{what}: expected non-negative numbers with a positive sum, got {list(weights)}"
        )
    return w / w.sum()


class MixtureReader:
    """Batches whose rows come from several sources with probabilities proportional to ``weights``.

    Args:
        sources: prepared dataset folders, or already-built :class:`ShardReader` objects (single-process ones:
            the mixture does the rank slicing), or ``(reader_or_folder, weight)`` pairs, or a mapping
            ``name -> folder/reader/(folder, weight)``.
        weights: one weight per source (not needed when ``sources`` carries them); normalised to sum to 1.
        split: split to read from folders.
        context_length, batch_size, seed, random, rank, world_size: as in :class:`ShardReader`; ``batch_size``
            is per rank. ``context_length`` may be omitted when readers are given.
    """

    def __init__(
        self,
        sources: Sequence[Any] | Mapping[str, Any],
        weights: Sequence[float] | None = None,
        split: str = "train",
        *,
        context_length: int | None = None,
        batch_size: int,
        seed: int = 0,
        random: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if isinstance(sources, Mapping):
            names, items = [str(k) for k in sources], list(sources.values())
        else:
            items = list(sources)
            names = []
        if not items:
            raise ScratchLLMError("MixtureReader: no sources given")
        if weights is None and all(isinstance(i, tuple) and len(i) == 2 for i in items):
            items, weights = [i[0] for i in items], [i[1] for i in items]
        if weights is None:
            raise ScratchLLMError("MixtureReader: give one weight per source")
        if len(weights) != len(items):
            raise ScratchLLMError(f"MixtureReader: {len(items)} sources but {len(weights)} weights")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ScratchLLMError(f"MixtureReader: rank {rank} is outside world_size {world_size}")
        self.weights = _normalise(weights)
        self.batch_size = batch_size
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.random = random
        self.split = split
        self.batches_drawn = 0

        self.readers: list[ShardReader] = []
        for i, item in enumerate(items):
            if isinstance(item, ShardReader):
                reader = item
            else:
                if context_length is None:
                    raise ScratchLLMError(
                        "MixtureReader: context_length is required when sources are folders"
                    )
                reader = ShardReader(
                    Path(item),
                    split,
                    context_length=context_length,
                    batch_size=1,
                    seed=seed + i,
                    random=random,
                )
            if reader.world_size != 1:
                raise ScratchLLMError(
                    f"MixtureReader: source {i} is a rank-{reader.rank} reader; give single-process readers "
                    "(the mixture slices ranks itself)"
                )
            self.readers.append(reader)
        if not names:
            names = [r.data_dir.name for r in self.readers]
        self.names = names
        lengths = {r.context_length for r in self.readers}
        if len(lengths) != 1 or (context_length is not None and lengths != {context_length}):
            raise ScratchLLMError(f"MixtureReader: sources have different context lengths {sorted(lengths)}")
        self.context_length = lengths.pop()
        vocab = {int(r.meta["vocab_size"]) for r in self.readers}
        if len(vocab) != 1:
            raise ScratchLLMError(
                f"MixtureReader: sources were prepared with different vocabularies (vocab sizes {sorted(vocab)})"
            )
        self.metas = [r.meta for r in self.readers]
        self.meta = self.metas[0]

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    def _global_sources(self, batch_index: int) -> np.ndarray:
        """The source index of every row of global batch ``batch_index``."""
        rng = np.random.default_rng([self.seed, batch_index, len(self.readers)])
        return rng.choice(len(self.readers), size=self.global_batch_size, p=self.weights)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """int64 ``x``, ``y`` of shape ``(batch_size, context_length)``, rows drawn from the sources by weight."""
        import torch

        k = self.batches_drawn
        choice = self._global_sources(k)
        rows = np.empty((self.batch_size, self.context_length + 1), dtype=np.int64)
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        for s, reader in enumerate(self.readers):
            global_rows = np.flatnonzero(choice == s)  # rows of the global batch that come from source s
            if global_rows.size == 0:
                continue
            # the j-th row from source s takes window j of that source's own global batch k
            shard, start = reader.window_positions(k, rows=self.global_batch_size)
            mine = (global_rows >= lo) & (global_rows < hi)
            picks = np.flatnonzero(mine)
            if picks.size:
                rows[global_rows[mine] - lo] = reader.read_windows(shard[picks], start[picks])
        self.batches_drawn += 1
        data = torch.from_numpy(rows)
        return data[:, :-1].contiguous(), data[:, 1:].contiguous()

    def reset(self) -> None:
        self.batches_drawn = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "mixture",
            "names": list(self.names),
            "weights": [float(w) for w in self.weights],
            **reader_position(self),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; the sources may be renamed, every other setting must be the same."""
        mine = {k: v for k, v in self.state_dict().items() if k not in ("kind", "names")}
        self.batches_drawn = saved_position("MixtureReader", state, mine)

    def report(self, total_tokens: int) -> str:
        """The plan for a run of ``total_tokens`` training tokens (see :func:`mixture_report`)."""
        return mixture_report(self.names, [r.tokens for r in self.readers], self.weights, total_tokens)


def _token_count(source: Any, split: str) -> int:
    if isinstance(source, (int, np.integer)):
        return int(source)
    if isinstance(source, ShardReader):
        return source.tokens
    return int(load_meta(source)["splits"][split]["tokens"])


def effective_epochs(
    sources: Sequence[Any], weights: Sequence[float], total_tokens: float, split: str = "train"
) -> list[float]:
    """How many times each source is seen in a run of ``total_tokens`` tokens: ``weight * total / size``.

    ``sources`` are token counts, prepared folders or readers. With GPT-3's numbers (300B training tokens; Common
    Crawl 410B tokens at 60%, Wikipedia 3B at 3%) this gives 0.44 and 3.0 epochs.
    """
    w = _normalise(weights)
    if len(w) != len(sources):
        raise ScratchLLMError(f"effective_epochs: {len(sources)} sources but {len(w)} weights")
    sizes = [_token_count(s, split) for s in sources]
    for i, size in enumerate(sizes):
        if size <= 0:
            raise ScratchLLMError(f"effective_epochs: source {i} has no tokens")
    return [float(wi * total_tokens / size) for wi, size in zip(w, sizes)]


def mixture_report(
    names: Sequence[str], tokens: Sequence[int], weights: Sequence[float], total_tokens: float
) -> str:
    """A table like GPT-3's table 2.2: tokens, weight in the mix, epochs elapsed over the run."""
    w = _normalise(weights)
    epochs = effective_epochs(list(tokens), w, total_tokens)
    width = max(len("source"), *(len(n) for n in names))
    lines = [f"{'source'.ljust(width)}  {'tokens':>14}  {'weight':>7}  {'epochs':>7}"]
    for name, size, wi, ep in zip(names, tokens, w, epochs):
        lines.append(f"{name.ljust(width)}  {size:>14,}  {wi:>7.1%}  {ep:>7.2f}")
    lines.append(f"{'total'.ljust(width)}  {sum(tokens):>14,}  {1:>7.0%}  (run: {total_tokens:,.0f} tokens)")
    return "\n".join(lines)
