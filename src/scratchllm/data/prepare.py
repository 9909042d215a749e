"""``prepare``: raw text files -> cleaned, filtered, deduplicated, tokenized shards + ``meta.json``.

The pipeline, in one pass over the input and with memory that does not grow with the corpus::

    main process                      worker processes (N)                  main process
    read documents in order  --->  clean, filter, hash, tokenize  --->  drop duplicates, pick split,
    (batches of ~1 MB)             (<|endoftext|> appended)             append to train/val shards

* Batches go to workers through a bounded window of in-flight tasks (not ``Pool.imap``, whose feeder thread would
  read the whole corpus ahead), and results come back in submission order, so the output is byte-identical for
  any number of workers.
* Exact duplicates are found in the main process from 16-byte hashes, which are all it keeps per document.
* The train/val split is decided per document from its hash and the seed: deterministic, independent of order,
  and a document never lands in both splits.
* Everything is written into a temporary folder next to ``out_dir`` and renamed at the end, so a failure or an
  interrupt leaves no half-written dataset behind.
* The tokenizer is saved inside the folder (``tokenizer/``) and ``meta.json`` names it by that relative path, so
  the folder can be moved or copied to another machine and still be read, trained on and decoded.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scratchllm.atomic import atomic_folder
from scratchllm.data.clean import Filters, dedup_key, normalize_text, strip_gutenberg
from scratchllm.data.readers import (
    LARGE_TXT_BYTES,
    TXT_DOCUMENTS,
    EncodingErrors,
    TxtDocuments,
    expand_inputs,
    read_documents,
)
from scratchllm.data.shards import FORMAT, FORMAT_VERSION, ShardWriter, file_sha256, token_dtype, write_meta
from scratchllm.errors import ScratchLLMError

#: a batch sent to a worker closes when it holds this many characters (or BATCH_DOCS documents)
BATCH_CHARS = 1 << 20
BATCH_DOCS = 512
FILTER_NAMES = ("min_chars", "symbol_ratio", "repeated_line_ratio")


@dataclass(frozen=True)
class CleanSettings:
    """What each worker does to a document before tokenizing it."""

    filters: Filters = field(default_factory=Filters)
    strip_gutenberg: bool = False


# ----------------------------------------------------------------------------------------------- workers
_worker: dict[str, Any] = {}


def _init_worker(tokenizer_dir: str, settings: CleanSettings, tok: Any = None) -> None:
    """Load the tokenizer once per process (the GPT-2 one uses the tiktoken backend when installed)."""
    if tok is None:
        from scratchllm.tokenizer import load

        tok = load(tokenizer_dir)
    if tok.eot_id is None:
        raise ScratchLLMError(f"{tokenizer_dir}: tokenizer has no <|endoftext|> token to separate documents")
    eot = np.asarray([tok.eot_id], dtype=token_dtype(tok.vocab_size)).tobytes()
    _worker.update(settings=settings, encode=_array_encoder(tok), eot=eot)


def _array_encoder(tok: Any) -> Any:
    """``text -> token ids as a numpy array`` (dtype of the shards) by the fastest route the tokenizer offers.

    A BPE tokenizer hands out numpy arrays itself (:meth:`BPETokenizer.encode_ordinary_array`, straight from
    tiktoken when it runs there); any other tokenizer's ``encode_ordinary`` list is converted.
    """
    from scratchllm.tokenizer.bpe import BPETokenizer

    dtype = token_dtype(tok.vocab_size)
    if isinstance(tok, BPETokenizer):
        return lambda text: tok.encode_ordinary_array(text, dtype)
    return lambda text: np.asarray(tok.encode_ordinary(text), dtype=dtype)


def _process_batch(texts: list[str]) -> list[tuple[str | None, bytes, bytes]]:
    """For each document: (reject reason or None, dedup key, token bytes ending in <|endoftext|>)."""
    settings: CleanSettings = _worker["settings"]
    encode, eot = _worker["encode"], _worker["eot"]
    out: list[tuple[str | None, bytes, bytes]] = []
    for raw in texts:
        text = normalize_text(raw)
        if settings.strip_gutenberg:
            text = strip_gutenberg(text)
        reason = settings.filters.reject_reason(text)
        if reason is not None:
            out.append((reason, b"", b""))
            continue
        ids = encode(text)
        out.append((None, dedup_key(text), ids.tobytes() + eot))
    return out


# ----------------------------------------------------------------------------------------------- main
def _batches(
    files: list[Path],
    text_field: str,
    encoding_errors: EncodingErrors,
    txt_documents: TxtDocuments,
    stats: list[dict[str, Any]],
) -> Iterator[tuple[list[str], list[int], int]]:
    """Group documents into (texts, source indices, raw bytes) batches, counting per-source documents."""
    texts: list[str] = []
    sources: list[int] = []
    chars = nbytes = 0
    for index, path in enumerate(files):
        for doc in read_documents(path, text_field, encoding_errors, txt_documents):
            texts.append(doc.text)
            sources.append(index)
            chars += len(doc.text)
            nbytes += doc.nbytes
            stats[index]["documents"] += 1
            if chars >= BATCH_CHARS or len(texts) >= BATCH_DOCS:
                yield texts, sources, nbytes
                texts, sources, chars, nbytes = [], [], 0, 0
        if stats[index]["documents"] == 0:
            print(f"scratchllm: warning: {path}: no documents", file=sys.stderr)
    if texts:
        yield texts, sources, nbytes


def _start_method() -> str:
    """``fork`` (workers inherit the loaded tokenizer: no second load) when it is safe, else ``spawn``.

    Forking is only safe while this process runs a single thread: a lock held by another thread at fork time
    stays locked forever in the child. With threads around (a server, a notebook kernel) we pay for ``spawn``.
    """
    import multiprocessing as mp
    import threading

    if sys.platform == "linux" and threading.active_count() == 1 and "fork" in mp.get_all_start_methods():
        return "fork"
    return "spawn"


def _make_pool(workers: int, tokenizer_dir: str, settings: CleanSettings, tok: Any) -> Any:
    """A process pool of ``workers`` tokenizer workers, or None to work in this process (``workers == 1``)."""
    if workers <= 1:
        _init_worker(tokenizer_dir, settings, tok)
        return None
    import multiprocessing as mp

    method = _start_method()
    init_args = (tokenizer_dir, settings, tok if method == "fork" else None)
    return mp.get_context(method).Pool(workers, initializer=_init_worker, initargs=init_args)


def _ordered_results(batches: Iterator[Any], pool: Any, workers: int) -> Iterator[Any]:
    """Yield ``(batch, results)`` in input order; at most ``2 * workers`` batches are in flight at once."""
    if pool is None:
        for batch in batches:
            yield batch, _process_batch(batch[0])
        return
    pending: deque[tuple[Any, Any]] = deque()
    for batch in batches:
        pending.append((batch, pool.apply_async(_process_batch, (batch[0],))))
        if len(pending) >= 2 * workers:
            done, result = pending.popleft()
            yield done, result.get()
    while pending:
        done, result = pending.popleft()
        yield done, result.get()


def _split_of(key: bytes, seed: int, val_fraction: float) -> str:
    """``"val"`` for a hash-determined ``val_fraction`` of documents, else ``"train"``."""
    if val_fraction <= 0:
        return "train"
    mixed = hashlib.blake2b(key, digest_size=8, salt=seed.to_bytes(16, "little", signed=True)).digest()
    return "val" if int.from_bytes(mixed, "little") / 2**64 < val_fraction else "train"


_loaded: dict[tuple[str, tuple[tuple[str, int, int], ...]], Any] = {}


def _load_tokenizer(tokenizer_dir: Path) -> Any:
    """Load a tokenizer, reusing the last one when the folder's files are unchanged (loading GPT-2 takes ~1 s)."""
    from scratchllm.tokenizer import load

    folder = tokenizer_dir.resolve()
    stamp = (
        tuple(
            (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.glob("*")) if p.is_file()
        )
        if folder.is_dir()
        else ()
    )
    key = (str(folder), stamp)
    if key not in _loaded:
        _loaded.clear()
        _loaded[key] = load(tokenizer_dir)
    return _loaded[key]


#: where a prepared folder keeps its copy of the tokenizer (``meta.json`` names it relative to the folder)
TOKENIZER_DIR = "tokenizer"


def _tokenizer_info(tokenizer_dir: Path) -> tuple[Any, dict[str, Any]]:
    tok = _load_tokenizer(tokenizer_dir)
    kind = getattr(tok, "name", None) or type(tok).__name__
    return tok, {
        "path": TOKENIZER_DIR,
        "kind": str(kind),
        "vocab_size": int(tok.vocab_size),
        "eot_id": tok.eot_id,
    }


def _carve_val_from_tail(
    folder: Path, train: dict[str, Any], val: dict[str, Any], fraction: float, dtype
) -> None:
    """No document was drawn for val (e.g. one big book): move the last tokens of train into a val shard.

    Splitting by document cannot give a validation set from a single document, yet a loss curve needs one; the
    tail of the last train shard is the usual answer (nanoGPT splits Shakespeare 90/10 the same way).
    """
    last = train["shards"][-1]
    path = folder / last["file"]
    tokens = np.fromfile(path, dtype=dtype)
    take = min(max(1, math.ceil(fraction * train["tokens"])), tokens.size - 1)
    if take < 1:
        return
    keep, tail = tokens[:-take], tokens[-take:]
    keep.tofile(path)
    last.update(tokens=int(keep.size), sha256=file_sha256(path))
    val_path = folder / "val_000000.bin"
    tail.tofile(val_path)
    val["shards"] = [{"file": val_path.name, "tokens": int(tail.size), "sha256": file_sha256(val_path)}]
    val["tokens"] = int(tail.size)
    val["from_train_tail"] = True
    train["tokens"] -= int(tail.size)


def prepare(
    inputs: Sequence[str | Path],
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    *,
    text_field: str = "text",
    val_fraction: float = 0.005,
    workers: int = 1,
    shard_tokens: int = 10_000_000,
    min_chars: int = 1,
    max_symbol_ratio: float = 0.5,
    max_repeated_line_ratio: float = 0.5,
    strip_gutenberg: bool = False,
    encoding_errors: EncodingErrors = "strict",
    txt_documents: TxtDocuments = "file",
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Turn text files into token shards and ``meta.json`` in ``out_dir``; return the meta dictionary.

    See the module docstring for the pipeline and :mod:`scratchllm.data.shards` for the output format. These
    arguments are also ``scratchllm prepare``'s options (``text_field`` is ``--text-field``).

    Args:
        inputs: files, folders or globs (see :func:`~scratchllm.data.readers.expand_inputs`).
        tokenizer_dir: tokenizer folder.
        out_dir: output folder for shards and meta.json; written atomically.
        text_field: JSONL field / parquet column holding the text.
        val_fraction: share of documents held out for validation (chosen by hash, so deterministic; when no
            document is drawn, e.g. a single book, the last tokens of train become val).
        workers: tokenizer processes.
        shard_tokens: tokens per shard file.
        min_chars: drop documents shorter than this many characters.
        max_symbol_ratio: drop documents whose share of non-letter, non-digit characters is higher (1 disables).
        max_repeated_line_ratio: drop documents whose share of repeated-line characters is higher (1 disables).
        strip_gutenberg: keep only the text between Project Gutenberg's *** START/END OF ... *** lines.
        encoding_errors: what to do with bytes that are not UTF-8: stop with an error, or replace them with U+FFFD.
        txt_documents: what one document is in a .txt file: the whole file (a book), each blank-line-separated
            paragraph, or each line (paragraphs and lines stream large corpus files).
        seed: seed of the train/val split.
        overwrite: replace an existing out_dir.
        progress: show a progress bar on stderr.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ScratchLLMError(f"val_fraction: expected a number in [0, 1), got {val_fraction}")
    if encoding_errors not in ("strict", "replace"):
        raise ScratchLLMError(f"encoding_errors: expected 'strict' or 'replace', got {encoding_errors!r}")
    if workers < 1:
        raise ScratchLLMError(f"workers: expected at least 1, got {workers}")
    if txt_documents not in TXT_DOCUMENTS:
        raise ScratchLLMError(
            f"txt_documents: expected one of {', '.join(TXT_DOCUMENTS)}, got {txt_documents!r}"
        )
    if strip_gutenberg and txt_documents != "file":
        raise ScratchLLMError(
            "strip_gutenberg needs each .txt file to be one document (a book); it cannot be combined with "
            f"txt_documents={txt_documents!r}"
        )
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    out_dir = Path(out_dir)
    tokenizer_dir = Path(tokenizer_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise ScratchLLMError(
            f"{out_dir}: already exists and is not empty; choose another --out or pass --overwrite"
        )
    files = expand_inputs(inputs)
    for path in files:
        size = path.stat().st_size
        if size == 0:
            raise ScratchLLMError(f"{path}: file is empty")
        if txt_documents == "file" and path.suffix.lower() == ".txt" and size > LARGE_TXT_BYTES:
            print(
                f"scratchllm: warning: {path} ({size / 2**30:.1f} GiB) is read into memory as one document; "
                "if it holds one document per line or per paragraph, pass --txt-documents lines or paragraphs "
                "to stream it",
                file=sys.stderr,
            )
    tok, info = _tokenizer_info(tokenizer_dir)
    if info["eot_id"] is None:
        raise ScratchLLMError(f"{tokenizer_dir}: tokenizer has no <|endoftext|> token to separate documents")
    dtype = token_dtype(info["vocab_size"])
    filters = Filters(min_chars, max_symbol_ratio, max_repeated_line_ratio)
    settings = CleanSettings(filters, strip_gutenberg)

    pool = bar = None
    try:
        with atomic_folder(out_dir) as tmp:
            sources = [{"path": str(p), "bytes": p.stat().st_size, "documents": 0, "kept": 0} for p in files]
            writers = {split: ShardWriter(tmp, split, dtype, shard_tokens) for split in ("train", "val")}
            dropped = dict.fromkeys((*FILTER_NAMES, "duplicates"), 0)
            seen: set[bytes] = set()
            batches = _batches(files, text_field, encoding_errors, txt_documents, sources)
            pool = _make_pool(workers, str(tokenizer_dir), settings, tok)  # before tqdm starts its thread
            bar = _progress_bar(sum(s["bytes"] for s in sources), progress)
            for (_texts, source_ids, nbytes), results in _ordered_results(batches, pool, workers):
                for source, (reason, key, token_bytes) in zip(source_ids, results):
                    if reason is not None:
                        dropped[reason] += 1
                    elif key in seen:
                        dropped["duplicates"] += 1
                    else:
                        seen.add(key)
                        sources[source]["kept"] += 1
                        tokens = np.frombuffer(token_bytes, dtype=dtype)
                        writers[_split_of(key, seed, val_fraction)].write(tokens)
                bar.update(nbytes)
            bar.close()
            bar = None
            if pool is not None:
                pool.close()
                pool.join()
                pool = None
            documents_read = sum(s["documents"] for s in sources)
            if documents_read == 0:
                raise ScratchLLMError(f"{', '.join(map(str, inputs))}: no documents found in the input")
            splits = {}
            for name, writer in writers.items():
                splits[name] = {"tokens": writer.tokens, "documents": writer.documents, "shards": writer.close()}
            if splits["train"]["documents"] == 0 and splits["val"]["documents"] == 0:
                counts = ", ".join(f"{k}: {v}" for k, v in dropped.items() if v)
                raise ScratchLLMError(
                    f"no documents left after filtering ({documents_read} read; dropped {counts}); "
                    "relax --min-chars / --max-symbol-ratio / --max-repeated-line-ratio"
                )
            if val_fraction > 0 and splits["val"]["tokens"] == 0:
                _carve_val_from_tail(tmp, splits["train"], splits["val"], val_fraction, dtype)
            meta = {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "tokenizer": info,
                "vocab_size": info["vocab_size"],
                "eot_id": info["eot_id"],
                "dtype": dtype.name,
                "byte_order": "little",
                "splits": splits,
                "sources": sources,
                "documents": {"read": documents_read, "kept": len(seen), "dropped": dropped},
                "settings": {
                    "text_field": text_field,
                    "val_fraction": val_fraction,
                    "shard_tokens": shard_tokens,
                    **asdict(filters),
                    "strip_gutenberg": strip_gutenberg,
                    "encoding_errors": encoding_errors,
                    "txt_documents": txt_documents,
                    "seed": seed,
                },
            }
            tok.save(tmp / TOKENIZER_DIR)  # a copy travels with the data (see the module docstring)
            write_meta(tmp, meta)
    except BaseException:
        if bar is not None:
            bar.leave = False
            bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
        raise
    return meta


class _NoBar:
    leave = False

    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, enabled: bool) -> Any:
    """A tqdm bar in bytes on stderr (it shows MB/s), or a no-op."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1000, desc="prepare", file=sys.stderr, delay=1.0
    )


def summary(meta: dict[str, Any]) -> str:
    """A few lines describing a prepared dataset (the CLI prints this)."""
    docs = meta["documents"]
    lines = [f"documents: {docs['read']} read, {docs['kept']} kept"]
    lines += [f"  dropped by {name}: {count}" for name, count in docs["dropped"].items()]
    for split, entry in meta["splits"].items():
        note = " (tail of train: no document was drawn for val)" if entry.get("from_train_tail") else ""
        lines.append(
            f"{split}: {entry['tokens']:,} tokens, {entry['documents']} documents, "
            f"{len(entry['shards'])} shard(s){note}"
        )
    lines.append(f"dtype: {meta['dtype']}, vocab_size: {meta['vocab_size']}, eot_id: {meta['eot_id']}")
    return "\n".join(lines)
