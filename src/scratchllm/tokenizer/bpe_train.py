"""Learning a byte-level BPE vocabulary, fast enough for real corpora.

The textbook algorithm ("count all adjacent pairs in the corpus, merge the most frequent, repeat") rescans the
whole corpus for every merge. Two observations make it fast:

1. Merges never cross pre-token boundaries, so the corpus is just a multiset of distinct *words* (pre-tokens)
   with counts: count them once (in parallel for big inputs) and forget the text.
2. A merge only changes the words that contain the merged pair, and in them only the pairs next to each
   occurrence. Keeping pair counts, a pair -> words index and a max-heap of pairs (stale entries are skipped
   when popped), each merge touches only those words and those pairs.

Ties between equally frequent pairs go to the smallest (left id, right id): training is deterministic.
"""

from __future__ import annotations

import heapq
import os
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import regex

from scratchllm.errors import ScratchLLMError
from scratchllm.tokenizer.base import ENDOFTEXT, special_regex
from scratchllm.tokenizer.bpe import GPT2_PATTERN, Backend, BPETokenizer
from scratchllm.utf8 import decode_utf8, read_utf8

_PARALLEL_MIN_CHARS = 2_000_000  # below this, starting worker processes costs more than it saves
_CHUNK_CHARS = 1_000_000


def decode_text(data: bytes, where: str, errors: str = "strict") -> str:
    """UTF-8 with errors that name ``where``, the byte offset and the tokenizer commands' ``--errors`` switch."""
    return decode_utf8(data, where, errors, replace_flag="--errors")


def read_text_file(path: Path, errors: str = "strict") -> str:
    """Read UTF-8 text; bad bytes raise an error naming the file and byte offset (or become U+FFFD)."""
    return read_utf8(path, errors, replace_flag="--errors")


def _split_for_workers(text: str, size: int) -> list[str]:
    """Cut ``text`` into ~``size`` pieces at places where the pre-tokenizer restarts anyway.

    A cut right after a newline that sits between two non-space characters gives the same pre-tokens as no
    cut (the lone newline is a pre-token of its own either way), so parallel counting equals serial counting.
    """
    cut_point = regex.compile(r"(?<=\S\n)(?=\S)")
    chunks = []
    start = 0
    while len(text) - start > size:
        match = cut_point.search(text, start + size)
        if match is None:
            break
        chunks.append(text[start : match.start()])
        start = match.start()
    chunks.append(text[start:])
    return chunks


def _count_chunk(args: tuple[str, str]) -> Counter[str]:
    pattern, text = args
    return Counter(regex.compile(pattern).findall(text))


def count_pretokens(
    texts: Iterable[str], pattern: str, special_tokens: Sequence[str] = (), workers: int = 1
) -> Counter[str]:
    """Distinct pre-tokens with their counts. Special-token text separates documents and is never learned."""
    splitter = special_regex(frozenset(special_tokens)) if special_tokens else None
    jobs: list[str] = []
    for text in texts:
        for part in splitter.split(text) if splitter is not None else [text]:
            jobs.extend(_split_for_workers(part, _CHUNK_CHARS) if len(part) > _CHUNK_CHARS else [part])
    total = sum(map(len, jobs))
    counts: Counter[str] = Counter()
    if workers > 1 and total >= _PARALLEL_MIN_CHARS:
        import multiprocessing

        with multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn").Pool(
            workers
        ) as pool:
            for part_counts in pool.imap_unordered(_count_chunk, [(pattern, j) for j in jobs]):
                counts.update(part_counts)
    else:
        compiled = regex.compile(pattern)
        for job in jobs:
            counts.update(compiled.findall(job))
    return counts


def learn_merges(
    word_counts: dict[bytes, int], num_merges: int, progress: bool = False
) -> tuple[dict[bytes, int], int]:
    """Run BPE on ``word_counts`` (UTF-8 word -> count); return the rank table and the merges performed.

    When a merge produces bytes that are already a token (the same string reached by another split, e.g.
    ``a+bc`` after ``ab+c``), the words use the existing id and no new id is spent, so the rank table stays
    a one-to-one ``bytes -> id`` map, as tiktoken requires.
    """
    vocab: list[bytes] = [bytes([b]) for b in range(256)]
    ranks: dict[bytes, int] = {t: i for i, t in enumerate(vocab)}
    words: list[list[int]] = []
    counts: list[int] = []
    for word, count in word_counts.items():
        if len(word) > 1:
            words.append(list(word))
            counts.append(count)

    pair_counts: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], set[int]] = {}
    for w, (word, count) in enumerate(zip(words, counts)):
        for pair in zip(word, word[1:]):
            pair_counts[pair] = pair_counts.get(pair, 0) + count
            where.setdefault(pair, set()).add(w)
    heap = [(-c, p) for p, c in pair_counts.items()]
    heapq.heapify(heap)

    merges = 0
    target = len(vocab) + num_merges
    report_every = max(1, num_merges // 20)
    while len(vocab) < target and heap:
        neg, pair = heapq.heappop(heap)
        current = pair_counts.get(pair, 0)
        if current != -neg:  # stale entry: the count fell since it was pushed
            if current > 0:
                heapq.heappush(heap, (-current, pair))
            continue
        a, b = pair
        merged = vocab[a] + vocab[b]
        new_id = ranks.get(merged)
        if new_id is None:
            new_id = len(vocab)
            vocab.append(merged)
            ranks[merged] = new_id
        merges += 1
        delta: dict[tuple[int, int], int] = {}
        for w in where.pop(pair):
            word, count = words[w], counts[w]
            # Merge occurrences left to right in place; only the neighbours of each occurrence change pairs.
            i = 0
            while True:
                try:
                    i = word.index(a, i)
                except ValueError:
                    break
                if i + 1 < len(word) and word[i + 1] == b:
                    if i > 0:
                        left = word[i - 1]
                        delta[left, a] = delta.get((left, a), 0) - count
                        delta[left, new_id] = delta.get((left, new_id), 0) + count
                        where.setdefault((left, new_id), set()).add(w)
                    if i + 2 < len(word):
                        right = word[i + 2]
                        delta[b, right] = delta.get((b, right), 0) - count
                        delta[new_id, right] = delta.get((new_id, right), 0) + count
                        where.setdefault((new_id, right), set()).add(w)
                    word[i : i + 2] = [new_id]
                i += 1
        # (a word may stay listed under a pair it no longer has; scanning it then finds nothing)
        delta.pop(pair, None)
        for p, d in delta.items():
            if d:
                c = pair_counts.get(p, 0) + d
                pair_counts[p] = c
                if d > 0:
                    heapq.heappush(heap, (-c, p))
        pair_counts.pop(pair, None)
        if progress and merges % report_every == 0:
            print(f"  merge {merges}: vocab {len(vocab)}/{target}, last {merged!r} x{-neg}", file=sys.stderr)
    return ranks, merges


def train_bpe(
    inputs: str | Iterable[str | Path],
    vocab_size: int,
    pattern: str = GPT2_PATTERN,
    special_tokens: Sequence[str] = (ENDOFTEXT,),
    workers: int | None = None,
    errors: Literal["strict", "replace"] = "strict",
    progress: bool = False,
    backend: Backend = "auto",
    name: str = "bpe",
) -> BPETokenizer:
    """Learn a byte-level BPE tokenizer.

    Args:
        inputs: one text (``str``), or an iterable of texts (``str``) and files (``pathlib.Path``).
        vocab_size: final size including the 256 byte tokens and the special tokens. A corpus too small to
            produce that many merges gives a smaller vocabulary.
        pattern: pre-tokenizer regex; GPT-2's by default.
        special_tokens: special texts, given the last ids in order.
        workers: processes for counting pre-tokens (default: up to 2).
        errors: ``"strict"`` (bad UTF-8 is an error) or ``"replace"`` for files.
        progress: print progress to stderr.
        backend: encoder backend of the returned tokenizer.
        name: label saved with the tokenizer.
    """
    special_tokens = list(dict.fromkeys(special_tokens))
    minimum = 256 + len(special_tokens)
    if vocab_size < minimum:
        raise ScratchLLMError(
            f"vocab_size {vocab_size} is too small: byte-level BPE needs at least 256 byte tokens + "
            f"{len(special_tokens)} special token(s) = {minimum}"
        )
    try:
        regex.compile(pattern)
    except regex.error as exc:
        raise ScratchLLMError(f"pattern: invalid regex {pattern!r} ({exc})") from None
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    items: list[Any] = [inputs] if isinstance(inputs, str) else list(inputs)

    def texts() -> Iterable[str]:
        for item in items:
            yield read_text_file(item, errors) if isinstance(item, Path) else item

    if progress:
        print(f"counting pre-tokens in {len(items)} input(s)...", file=sys.stderr)
    word_counts = count_pretokens(texts(), pattern, special_tokens, workers)
    byte_counts: dict[bytes, int] = {}
    for word, count in word_counts.items():
        key = word.encode("utf-8", errors="surrogatepass" if errors == "strict" else "replace")
        byte_counts[key] = byte_counts.get(key, 0) + count
    if progress:
        print(f"{len(byte_counts)} distinct pre-tokens; learning merges...", file=sys.stderr)
    ranks, _ = learn_merges(byte_counts, vocab_size - minimum, progress=progress)
    specials = {t: len(ranks) + i for i, t in enumerate(special_tokens)}
    if progress and len(ranks) + len(specials) < vocab_size:
        print(f"note: the corpus only supports {len(ranks) + len(specials)} tokens", file=sys.stderr)
    return BPETokenizer(ranks, pattern, specials, backend=backend, name=name)
