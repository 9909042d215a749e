"""Token shards on disk: the writer used by ``prepare`` and the reader used by pretraining.

Format (a folder written by :func:`scratchllm.data.prepare.prepare`):

* ``train_000000.bin``, ``train_000001.bin``, ``val_000000.bin`` ...: raw little-endian token ids, ``uint16`` when
  the vocabulary fits in 65,536 ids (GPT-2's 50,257 does), else ``uint32``; no header, so ``np.memmap`` reads them
  in place and a shard can be inspected with ``np.fromfile``;
* ``meta.json``: tokenizer, dtype, and for each split its token and document counts and the list of shards with
  their token counts and sha256.

:class:`ShardReader` serves fixed-length windows of ``context_length + 1`` tokens (inputs and next-token targets)
without ever loading a shard into memory. Its position is a single counter (batches drawn so far), so a training
run resumes exactly where it stopped, and every rank of a distributed run reads its own slice of one global batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

import numpy as np

from scratchllm.atomic import atomic_folder, write_json_atomic
from scratchllm.errors import ScratchLLMError
from scratchllm.utf8 import read_json

if TYPE_CHECKING:
    import torch

META_FILE = "meta.json"
FORMAT = "scratchllm-token-shards"
FORMAT_VERSION = 1


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest little-endian unsigned integer type that holds every id of the vocabulary."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def shard_name(split: str, index: int) -> str:
    return f"{split}_{index:06d}.bin"


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class ShardWriter:
    """Append token arrays to ``<split>_NNNNNN.bin`` files of ``shard_tokens`` tokens each, hashing as it goes.

    Memory use is independent of the corpus size: arrays are written with ``ndarray.tofile`` the moment they
    arrive and a document that straddles a shard boundary is simply split between two shards.
    """

    def __init__(self, folder: Path, split: str, dtype: np.dtype, shard_tokens: int) -> None:
        if shard_tokens < 1:
            raise ScratchLLMError(f"shard_tokens: expected a positive number of tokens, got {shard_tokens}")
        self.folder = folder
        self.split = split
        self.dtype = np.dtype(dtype)
        self.shard_tokens = shard_tokens
        self.shards: list[dict[str, Any]] = []
        self.tokens = 0
        self.documents = 0
        self._handle: Any = None
        self._hash: Any = None
        self._in_shard = 0

    def write(self, tokens: np.ndarray) -> None:
        """Append one document's tokens (already ending in ``<|endoftext|>``)."""
        tokens = np.ascontiguousarray(tokens, dtype=self.dtype)
        self.documents += 1
        while tokens.size:
            if self._handle is None:
                self._open()
            piece = tokens[: self.shard_tokens - self._in_shard]
            piece.tofile(self._handle)
            self._hash.update(memoryview(piece).cast("B"))
            self._in_shard += piece.size
            self.tokens += piece.size
            tokens = tokens[piece.size :]
            if self._in_shard == self.shard_tokens:
                self._close_shard()

    def close(self) -> list[dict[str, Any]]:
        """Finish the last shard; return the shard list for ``meta.json``."""
        if self._handle is not None:
            self._close_shard()
        return self.shards

    def _open(self) -> None:
        name = shard_name(self.split, len(self.shards))
        self._handle = (self.folder / name).open("wb")
        self._hash = hashlib.sha256()
        self._in_shard = 0
        self.shards.append({"file": name, "tokens": 0, "sha256": ""})

    def _close_shard(self) -> None:
        self._handle.close()
        self.shards[-1].update(tokens=self._in_shard, sha256=self._hash.hexdigest())
        self._handle = None


def write_token_dataset(
    out_dir: str | Path,
    splits: dict[str, Sequence[Sequence[int] | np.ndarray]],
    *,
    vocab_size: int,
    eot_id: int | None = None,
    shard_tokens: int = 10_000_000,
    tokenizer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write already-tokenized documents as a dataset folder (shards + ``meta.json``) that readers accept.

    ``prepare`` is the way to build datasets from text; this is for token ids you already have (tests, synthetic
    tasks). Each document is written as given: add ``eot_id`` yourself if you want separators. The folder is
    assembled beside ``out_dir`` and renamed into place when complete (replacing an earlier one).
    """
    dtype = token_dtype(vocab_size)
    entries = {}
    with atomic_folder(out_dir) as folder:
        for split, documents in splits.items():
            writer = ShardWriter(folder, split, dtype, shard_tokens)
            for doc in documents:
                ids = np.asarray(doc, dtype=np.int64)
                if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
                    raise ScratchLLMError(f"split {split!r}: token id out of range 0..{vocab_size - 1}")
                writer.write(ids.astype(dtype))
            entries[split] = {"tokens": writer.tokens, "documents": writer.documents, "shards": writer.close()}
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "tokenizer": tokenizer or {"path": None, "kind": None, "vocab_size": vocab_size, "eot_id": eot_id},
            "vocab_size": vocab_size,
            "eot_id": eot_id,
            "dtype": dtype.name,
            "byte_order": "little",
            "splits": entries,
        }
        write_meta(folder, meta)
    return meta


def write_meta(folder: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``meta.json`` into ``folder`` atomically (a crash leaves the old file or the new one)."""
    return write_json_atomic(Path(folder) / META_FILE, meta)


def load_meta(data_dir: str | Path) -> dict[str, Any]:
    """Read and check ``meta.json`` of a prepared dataset folder."""
    folder = Path(data_dir)
    if not folder.is_dir():
        raise ScratchLLMError(f"{folder}: no such data folder; create one with `scratchllm prepare`")
    path = folder / META_FILE
    if not path.is_file():
        raise ScratchLLMError(f"{path}: missing; expected a folder written by `scratchllm prepare`")
    meta = read_json(path)
    if (
        not isinstance(meta, dict)
        or meta.get("format") != FORMAT
        or not isinstance(meta.get("splits"), dict)
        or "dtype" not in meta
    ):
        raise ScratchLLMError(f"{path}: not a scratchllm token-shard meta.json (format {FORMAT!r} expected)")
    for split, entry in meta["splits"].items():
        for shard in entry.get("shards", []) if isinstance(entry, dict) else []:
            name = shard.get("file") if isinstance(shard, dict) else None
            if not _is_plain_file_name(name):
                raise ScratchLLMError(
                    f"{path}: split {split!r} names shard file {name!r}; expected a plain file name inside the "
                    "data folder (no path, no '..')"
                )
    return meta


def _is_plain_file_name(name: Any) -> bool:
    """True for ``train_000000.bin``; False for anything that could point outside its folder."""
    if not isinstance(name, str) or name in ("", ".", ".."):
        return False
    return PurePosixPath(name).name == name and PureWindowsPath(name).name == name


def reader_position(reader: Any) -> dict[str, Any]:
    """The settings that fix a reader's sequence of batches, and how far along it is (``batches_drawn``)."""
    return {
        "seed": reader.seed,
        "random": reader.random,
        "context_length": reader.context_length,
        "global_batch_size": reader.global_batch_size,
        "batches_drawn": reader.batches_drawn,
    }


def saved_position(kind: str, state: dict[str, Any], mine: dict[str, Any]) -> int:
    """``batches_drawn`` of a saved reader ``state``, after checking every other setting equals ``mine``'s."""
    for key, value in mine.items():
        if key != "batches_drawn" and key in state and state[key] != value:
            raise ScratchLLMError(
                f"{kind} state: {key} is {state[key]!r} in the saved state but {value!r} in this reader; "
                "resume with the same data settings"
            )
    drawn = state.get("batches_drawn")
    if not isinstance(drawn, int) or drawn < 0:
        raise ScratchLLMError(f"{kind} state: batches_drawn must be a non-negative integer, got {drawn!r}")
    return drawn


class ShardReader:
    """Batches of ``(x, y)`` windows from one split of a prepared dataset.

    Args:
        data_dir: folder written by ``scratchllm prepare``.
        split: ``"train"`` or ``"val"`` (any split named in ``meta.json``).
        context_length: tokens per row; each window holds ``context_length + 1`` tokens so that ``y`` is ``x``
            shifted by one.
        batch_size: rows per batch *on this rank*.
        seed: seed of the random window positions.
        random: True draws window starts uniformly over all positions of all shards; False walks the shards in
            order with windows whose inputs do not overlap (stride ``context_length``), wrapping around at the end.
        rank, world_size: distributed position. Rank ``r`` returns rows ``[r*B:(r+1)*B]`` of the global batch of
            ``world_size * B`` rows that a single-process reader with the same seed would return.
        verify: check every shard's sha256 against ``meta.json`` before reading (reads all the data once).

    Windows never span two shards. A shard shorter than one window (say, a short last shard) is skipped; a split
    with no shard long enough is an error. Windows may span documents (they are separated by ``<|endoftext|>``).
    """

    def __init__(
        self,
        data_dir: str | Path,
        split: str = "train",
        *,
        context_length: int,
        batch_size: int,
        seed: int = 0,
        random: bool = True,
        rank: int = 0,
        world_size: int = 1,
        verify: bool = False,
    ) -> None:
        if context_length < 1 or batch_size < 1:
            raise ScratchLLMError(
                f"ShardReader: context_length and batch_size must be positive, got {context_length}, {batch_size}"
            )
        if world_size < 1 or not 0 <= rank < world_size:
            raise ScratchLLMError(f"ShardReader: rank {rank} is outside world_size {world_size}")
        if seed < 0:
            raise ScratchLLMError(f"ShardReader: seed must be >= 0, got {seed}")
        self.data_dir = Path(data_dir)
        self.meta = load_meta(self.data_dir)
        splits = self.meta["splits"]
        if split not in splits:
            raise ScratchLLMError(
                f"{self.data_dir / META_FILE}: unknown split {split!r}; expected one of {', '.join(splits)}"
            )
        self.split = split
        self.context_length = context_length
        self.batch_size = batch_size
        self.seed = seed
        self.random = random
        self.rank = rank
        self.world_size = world_size
        self.batches_drawn = 0
        self.tokens = int(splits[split]["tokens"])

        dtype = np.dtype(self.meta["dtype"]).newbyteorder("<")
        window = context_length + 1
        self._arrays: list[np.ndarray] = []
        counts: list[int] = []
        for shard in splits[split]["shards"]:
            path = self.data_dir / shard["file"]
            if not path.is_file():
                raise ScratchLLMError(f"{path}: shard listed in meta.json is missing")
            expected = int(shard["tokens"]) * dtype.itemsize
            if path.stat().st_size != expected:
                raise ScratchLLMError(
                    f"{path}: {path.stat().st_size} bytes, expected {expected} ({shard['tokens']} tokens of "
                    f"{dtype.name}); the shard is truncated or was changed"
                )
            if verify and file_sha256(path) != shard["sha256"]:
                raise ScratchLLMError(f"{path}: sha256 does not match meta.json; the shard is corrupt")
            if shard["tokens"] < window:
                continue  # too short for a single window (e.g. the tail shard); it contributes nothing
            self._arrays.append(np.memmap(path, dtype=dtype, mode="r"))
            n = int(shard["tokens"])
            # random: every start with a full window; sequential: starts 0, T, 2T, ... with a full window
            counts.append(n - context_length if random else (n - 1) // context_length)
        if not counts:
            longest = max((int(s["tokens"]) for s in splits[split]["shards"]), default=0)
            raise ScratchLLMError(
                f"{self.data_dir}: split {split!r} has no shard with a full window of {window} tokens "
                f"(longest shard: {longest} tokens); use a smaller context_length or more data"
            )
        self._cumulative = np.cumsum(np.asarray(counts, dtype=np.int64))
        self.num_windows = int(self._cumulative[-1])

    # ------------------------------------------------------------------------------------------ batches
    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    def window_positions(self, batch_index: int, rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(shard index, start token) for every row of global batch number ``batch_index`` (all ranks).

        ``rows`` overrides the number of rows: a mixture asks each source for as many rows as the mixture's
        global batch and reads the windows it picks with :meth:`read_windows`.
        """
        rows = self.global_batch_size if rows is None else rows
        if self.random:
            rng = np.random.default_rng([self.seed, batch_index])
            flat = rng.integers(0, self.num_windows, size=rows, dtype=np.int64)
        else:
            flat = (batch_index * rows + np.arange(rows, dtype=np.int64)) % self.num_windows
        shard = np.searchsorted(self._cumulative, flat, side="right")
        before = np.concatenate(([0], self._cumulative[:-1]))[shard]
        local = flat - before
        return shard, local if self.random else local * self.context_length

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """int64 tensors ``x``, ``y`` of shape ``(batch_size, context_length)``; ``y`` is ``x`` shifted by one."""
        import torch

        shard, start = self.window_positions(self.batches_drawn)
        lo = self.rank * self.batch_size
        rows = self.read_windows(shard[lo : lo + self.batch_size], start[lo : lo + self.batch_size])
        self.batches_drawn += 1
        data = torch.from_numpy(rows)
        return data[:, :-1].contiguous(), data[:, 1:].contiguous()

    def read_windows(self, shard: np.ndarray, start: np.ndarray) -> np.ndarray:
        """Copy the windows at (shard, start) pairs out of the memory maps: int64 ``(len(start), T + 1)``."""
        window = self.context_length + 1
        rows = np.empty((len(start), window), dtype=np.int64)
        for i, (s, p) in enumerate(zip(shard, start)):
            rows[i] = self._arrays[s][p : p + window]
        return rows

    def reset(self) -> None:
        """Back to the first batch (evaluation uses this to see the same fixed batches every time)."""
        self.batches_drawn = 0

    # ------------------------------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the same sequence of batches (JSON-serialisable)."""
        return {"split": self.split, **reader_position(self)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; the reader must have been built with the same settings."""
        self.batches_drawn = saved_position("ShardReader", state, self.state_dict())

    def __repr__(self) -> str:
        return (
            f"ShardReader({str(self.data_dir)!r}, split={self.split!r}, windows={self.num_windows}, "
            f"context_length={self.context_length}, batch_size={self.batch_size}, random={self.random}, "
            f"rank={self.rank}/{self.world_size})"
        )
