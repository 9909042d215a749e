"""Byte-level BPE: one rank table, two encoders (readable Python and tiktoken), JSON/text files.

A byte-level BPE vocabulary is a *rank table* ``bytes -> id``: the 256 single bytes plus every merged token, where
a lower id means the merge was learned earlier. Encoding text is:

1. split it into pre-tokens with a regex (GPT-2's pattern by default: words with their leading space, numbers,
   punctuation runs, whitespace), so merges never cross word boundaries;
2. turn each pre-token into its UTF-8 bytes and repeatedly merge the adjacent pair whose concatenation has the
   lowest rank, until no adjacent pair is in the table (exactly tiktoken's rule, including leftmost-first ties).

The Python encoder below is the readable reference; a cache of pre-token -> ids makes it usable on real corpora,
because natural text repeats the same words over and over. When tiktoken is installed the same table, pattern
and special tokens are handed to ``tiktoken.Encoding`` for speed; tests prove both give identical ids.
"""

from __future__ import annotations

import base64
import heapq
from collections.abc import Iterable, Sequence
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import numpy as np
import regex

from scratchllm.errors import ScratchLLMError
from scratchllm.tokenizer.base import META_FILE, Tokenizer

#: GPT-2's pre-tokenizer as written by tiktoken: identical splits to OpenAI's original
#: ``'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`` but faster (possessive ``++``).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

#: Patterns that split exactly like a key but run faster in Python's ``regex`` module (which, unlike Rust's
#: engine, gains nothing from possessive quantifiers). Equality is proved by the tiktoken parity tests.
_FASTER_IN_PYTHON = {
    GPT2_PATTERN: r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
}

RANKS_FILE = "ranks.txt"
Backend = Literal["auto", "python", "tiktoken"]

_NO_RANK = 1 << 62
_LONG_PIECE = 256  # bytes; longer pre-tokens (e.g. whole Chinese sentences) use the O(n log n) heap merge
_SPLIT_MIN_BYTES = 16  # longer new pre-tokens are first cut where no merge can cross
_CACHE_LIMIT = 1 << 18  # pre-tokens remembered by the Python encoder before the cache is cleared
_CACHE_MAX_CHARS = 64  # longer pre-tokens are rarely repeated, so they are not cached


# ---------------------------------------------------------------------------------------------- the merge rule
def bpe_merge(piece: bytes, ranks: dict[bytes, int]) -> list[int]:
    """Ids of one pre-token: merge the adjacent pair of lowest rank until none is left (tiktoken's rule).

    ``pair_ranks[i]`` is the rank of ``parts[i] + parts[i + 1]`` (or "none"); a merge only changes the ranks of
    the pairs next to it, and ``min``/``index`` find the lowest, leftmost pair at C speed.
    """
    if len(piece) > _LONG_PIECE:
        return _bpe_merge_heap(piece, ranks)
    none = _NO_RANK
    get = ranks.get
    parts = [piece[i : i + 1] for i in range(len(piece))]
    pair_ranks = [get(piece[i : i + 2], none) for i in range(len(piece) - 1)]
    while pair_ranks:
        best = min(pair_ranks)
        if best == none:
            break
        i = pair_ranks.index(best)
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
        del pair_ranks[i]
        if i < len(pair_ranks):
            pair_ranks[i] = get(parts[i] + parts[i + 1], none)
        if i > 0:
            pair_ranks[i - 1] = get(parts[i - 1] + parts[i], none)
    return [ranks[p] for p in parts]


def _bpe_merge_heap(piece: bytes, ranks: dict[bytes, int]) -> list[int]:
    """The same rule for long pieces: a heap of candidate pairs over a linked list of parts.

    A part is identified by its start offset; ``end[i]`` is where part ``i`` ends. A heap entry (rank, i, stop)
    is still valid when part ``i`` exists and it plus its right neighbour span exactly ``[i, stop)``; since the
    rank depends only on those bytes, a valid entry always describes the current pair. Popping the smallest
    (rank, start) picks the lowest rank and, on ties, the leftmost pair, as the quadratic loop does.
    """
    n = len(piece)
    end = list(range(1, n + 1))
    prev = list(range(-1, n - 1))
    alive = [True] * n
    get = ranks.get
    heap = []
    for i in range(n - 1):
        rank = get(piece[i : i + 2])
        if rank is not None:
            heap.append((rank, i, i + 2))
    heapq.heapify(heap)
    while heap:
        _, i, stop = heapq.heappop(heap)
        if not alive[i]:
            continue
        j = end[i]
        if j >= n or end[j] != stop:
            continue
        alive[j] = False  # part j is absorbed into part i
        end[i] = stop
        if stop < n:
            prev[stop] = i
            rank = get(piece[i : end[stop]])
            if rank is not None:
                heapq.heappush(heap, (rank, i, end[stop]))
        p = prev[i]
        if p >= 0:
            rank = get(piece[p:stop])
            if rank is not None:
                heapq.heappush(heap, (rank, p, stop))
    ids = []
    i = 0
    while i < n:
        ids.append(ranks[piece[i : end[i]]])
        i = end[i]
    return ids


class PythonBPE:
    """The readable encoder: regex pre-tokenizer + :func:`bpe_merge` + a cache of pre-token -> ids.

    Long pre-tokens (a Chinese clause is one pre-token under GPT-2's pattern) are rarely repeated, so the cache
    cannot help them directly. But if no token of the vocabulary spans a position, no merge can ever cross it
    and the two sides merge independently: cutting there changes nothing. A token spanning position ``p``
    either is ``data[p-1:p+1]`` or contains ``data[p-2:p+1]`` or ``data[p-1:p+2]``, so checking the 2-byte
    tokens and the set of 3-byte substrings of all tokens finds safe cuts. New long pieces are cut at safe
    character starts and the (very repetitive) parts are cached.
    """

    def __init__(self, ranks: dict[bytes, int], pattern: str) -> None:
        self.ranks = ranks
        self.pattern = regex.compile(_FASTER_IN_PYTHON.get(pattern, pattern))
        self.cache: dict[str, list[int]] = {}
        self.part_cache: dict[bytes, list[int]] = {}
        self._trigrams: set[bytes] | None = None  # 3-byte substrings of tokens, built when first needed

    def encode_ordinary(self, text: str) -> list[int]:
        try:
            return self._encode(text)
        except UnicodeEncodeError:
            # Lone surrogates cannot be UTF-8: replace them with U+FFFD, as tiktoken does.
            return self._encode(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))

    def _encode(self, text: str) -> list[int]:
        # Look every pre-token up in the cache at C speed (map); run the merge loop only for new pre-tokens.
        pieces = self.pattern.findall(text)
        cache = self.cache
        found = list(map(cache.get, pieces))
        if None in found:
            new = {
                p: self._encode_piece(p.encode("utf-8"))
                for p in {p for p, f in zip(pieces, found) if f is None}
            }
            found = [f if f is not None else new[p] for p, f in zip(pieces, found)]
            if len(cache) + len(new) > _CACHE_LIMIT:
                cache.clear()
            cache.update((p, ids) for p, ids in new.items() if len(p) <= _CACHE_MAX_CHARS)
        return list(chain.from_iterable(found))

    def _encode_piece(self, data: bytes) -> list[int]:
        rank = self.ranks.get(data)
        if rank is not None:
            return [rank]
        if len(data) <= _SPLIT_MIN_BYTES:
            return bpe_merge(data, self.ranks)
        if self._trigrams is None:
            self._trigrams = {t[i : i + 3] for t in self.ranks if len(t) > 2 for i in range(len(t) - 2)}
        ranks, trigrams = self.ranks, self._trigrams
        ids: list[int] = []
        start = 0
        for p in range(2, len(data) - 1):
            if (
                data[p] & 0xC0 != 0x80  # a character starts here (cutting inside one would be valid but rare)
                and data[p - 1 : p + 1] not in ranks
                and data[p - 2 : p + 1] not in trigrams
                and data[p - 1 : p + 2] not in trigrams
            ):
                ids += self._encode_part(data[start:p])
                start = p
        return ids + self._encode_part(data[start:])

    def _encode_part(self, part: bytes) -> list[int]:
        found = self.part_cache.get(part)
        if found is None:
            rank = self.ranks.get(part)
            found = [rank] if rank is not None else bpe_merge(part, self.ranks)
            if len(self.part_cache) >= _CACHE_LIMIT:
                self.part_cache.clear()
            self.part_cache[part] = found
        return found


# ---------------------------------------------------------------------------------------------- the tokenizer
class BPETokenizer(Tokenizer):
    """Byte-level BPE over a rank table, with tiktoken's special-token semantics and an optional fast backend.

    Args:
        ranks: token bytes -> id; must contain all 256 single bytes, ids ``0..len(ranks)-1``.
        pattern: pre-tokenizer regex (``regex`` module syntax).
        special_tokens: special text -> id, ids continuing after the ranks.
        backend: ``"python"`` (readable reference), ``"tiktoken"`` (fast; error if unavailable) or ``"auto"``.
        name: a label saved with the files (e.g. ``"gpt2"``).
    """

    def __init__(
        self,
        ranks: dict[bytes, int],
        pattern: str = GPT2_PATTERN,
        special_tokens: dict[str, int] | None = None,
        backend: Backend = "auto",
        name: str = "bpe",
    ) -> None:
        self.ranks = ranks
        self.pattern = pattern
        self.special_tokens = dict(special_tokens or {})
        self.name = name
        self.vocab_size = len(ranks) + len(self.special_tokens)
        decoder: list[bytes | None] = [None] * self.vocab_size
        for token, i in list(ranks.items()) + [
            (t.encode("utf-8"), i) for t, i in self.special_tokens.items()
        ]:
            if not 0 <= i < self.vocab_size or decoder[i] is not None:
                raise ScratchLLMError(
                    f"{name}: token ids must be 0..{self.vocab_size - 1} without repeats, got {i} for {token!r}"
                )
            decoder[i] = token
        missing = [b for b in range(256) if bytes([b]) not in ranks]
        if missing:
            raise ScratchLLMError(f"{name}: the rank table lacks single-byte tokens, e.g. byte {missing[0]}")
        self._decoder: list[bytes] = decoder  # type: ignore[assignment]
        try:
            self._regex = regex.compile(pattern)
        except regex.error as exc:
            raise ScratchLLMError(f"{name}: invalid pre-tokenizer pattern {pattern!r} ({exc})") from None
        self._python = PythonBPE(ranks, pattern)
        self._tiktoken = _make_tiktoken(self, backend)

    # ------------------------------------------------------------------------------------------ backend
    @property
    def backend(self) -> str:
        """The backend in use: ``"tiktoken"`` or ``"python"``."""
        return "python" if self._tiktoken is None else "tiktoken"

    def with_backend(self, backend: Backend) -> BPETokenizer:
        """The same vocabulary with another encoder."""
        return BPETokenizer(self.ranks, self.pattern, self.special_tokens, backend=backend, name=self.name)

    # ------------------------------------------------------------------------------------------ encode
    def encode_ordinary(self, text: str) -> list[int]:
        if self._tiktoken is not None:
            return self._tiktoken.encode_ordinary(text)
        return self._python.encode_ordinary(text)

    def encode_ordinary_array(self, text: str, dtype: np.dtype | str = np.int64) -> np.ndarray:
        """:meth:`encode_ordinary` as a numpy array of ``dtype``.

        tiktoken returns a numpy array directly, which skips building a Python list of ints and converting it
        (about a fifth of the per-token cost of ``prepare``); the Python backend converts its list.
        """
        if self._tiktoken is not None and hasattr(self._tiktoken, "encode_to_numpy"):
            ids = self._tiktoken.encode_to_numpy(text, allowed_special=set(), disallowed_special=())
            return ids.astype(dtype)
        return np.asarray(self._python.encode_ordinary(text), dtype=dtype)

    def _encode_allowing(self, text: str, allowed: frozenset[str]) -> list[int]:
        if self._tiktoken is None:
            return super()._encode_allowing(text, allowed)
        return self._tiktoken.encode(text, allowed_special=allowed, disallowed_special=())

    def _encode_ordinary_batch(self, texts: Sequence[str], num_threads: int) -> list[list[int]] | None:
        if self._tiktoken is None:
            return None
        for text in texts:  # same check tiktoken does, but with our error type
            self._special_plan(text, frozenset(), "all")
        return self._tiktoken.encode_ordinary_batch(list(texts), num_threads=num_threads)

    # ------------------------------------------------------------------------------------------ decode
    def token_bytes(self, token_id: int) -> bytes:
        self._check_id(token_id)
        return self._decoder[token_id]

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        decoder = self._decoder
        ids = list(ids)
        try:
            if ids and min(ids) < 0:
                raise IndexError
            return b"".join([decoder[i] for i in ids])
        except (IndexError, TypeError):
            for i in ids:
                if not isinstance(i, int):
                    raise ScratchLLMError(f"token id {i!r} is not an integer") from None
                self._check_id(i)
            raise

    # ------------------------------------------------------------------------------------------ files
    def _save_files(self, folder: Path) -> dict[str, Any]:
        write_ranks(folder / RANKS_FILE, self.ranks)
        return {"kind": "bpe", "name": self.name, "pattern": self.pattern}

    @classmethod
    def from_folder(cls, folder: Path, meta: dict[str, Any], backend: Backend = "auto") -> BPETokenizer:
        """Load what :meth:`save` wrote (``meta`` is the parsed metadata file)."""
        meta_file = folder / META_FILE
        for key, kind in (("pattern", str), ("special_tokens", dict)):
            if not isinstance(meta.get(key), kind):
                raise ScratchLLMError(f"{meta_file}: field {key!r} missing or not a {kind.__name__}")
        ranks = read_ranks(folder / RANKS_FILE)
        return cls(
            ranks,
            pattern=meta["pattern"],
            special_tokens=meta["special_tokens"],
            backend=backend,
            name=str(meta.get("name", "bpe")),
        )

    def __repr__(self) -> str:
        return f"BPETokenizer(name={self.name!r}, vocab_size={self.vocab_size}, backend={self.backend!r})"


def _make_tiktoken(tok: BPETokenizer, backend: str) -> Any:
    """A ``tiktoken.Encoding`` over the same table, or None for the Python backend."""
    if backend not in ("auto", "python", "tiktoken"):
        raise ScratchLLMError(f"backend: expected auto, python or tiktoken, got {backend!r}")
    if backend == "python":
        return None
    try:
        import tiktoken
    except ImportError:
        if backend == "tiktoken":
            raise ScratchLLMError("backend 'tiktoken' requested but tiktoken is not installed") from None
        return None
    try:
        return tiktoken.Encoding(
            name=f"scratchllm-{tok.name}",
            pat_str=tok.pattern,
            mergeable_ranks=tok.ranks,
            special_tokens=tok.special_tokens,
        )
    except Exception as exc:  # e.g. a pattern the Rust regex engine does not accept
        if backend == "tiktoken":
            raise ScratchLLMError(f"tiktoken backend could not be built for {tok.name}: {exc}") from None
        return None


# ---------------------------------------------------------------------------------------------- rank files
def write_ranks(path: Path, ranks: dict[bytes, int]) -> None:
    """One ``base64(token bytes) id`` line per token, in id order (the ``.tiktoken`` text format)."""
    lines = [
        f"{base64.b64encode(t).decode('ascii')} {i}\n" for t, i in sorted(ranks.items(), key=lambda x: x[1])
    ]
    path.write_text("".join(lines), encoding="ascii")


def read_ranks(path: Path) -> dict[bytes, int]:
    """Parse :func:`write_ranks` output; errors name the file and line."""
    if not path.is_file():
        raise ScratchLLMError(f"{path}: file not found (expected the rank table of a BPE tokenizer)")
    ranks: dict[bytes, int] = {}
    with open(path, encoding="ascii", errors="strict") as f:
        try:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    token, rank = line.split()
                    ranks[base64.b64decode(token, validate=True)] = int(rank)
                except ValueError:
                    raise ScratchLLMError(
                        f"{path}:{lineno}: expected 'base64-token id', got {line.strip()[:60]!r}"
                    ) from None
        except UnicodeDecodeError:
            raise ScratchLLMError(f"{path}: not an ASCII rank table") from None
    return ranks
