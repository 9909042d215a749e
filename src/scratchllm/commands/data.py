"""``scratchllm prepare`` and ``scratchllm download``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from scratchllm.errors import ScratchLLMError
from scratchllm.signature_cli import positional


def prepare(
    input: list[str],
    tokenizer: Path,
    out: Path,
    text_field: str = "text",
    val_fraction: float = 0.005,
    workers: int = 1,
    shard_tokens: int = 10_000_000,
    min_chars: int = 1,
    max_symbol_ratio: float = 0.5,
    max_repeated_line_ratio: float = 0.5,
    strip_gutenberg: bool = False,
    encoding_errors: Literal["strict", "replace"] = "strict",
    txt_documents: Literal["file", "paragraphs", "lines"] = "file",
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> None:
    """Clean, deduplicate and tokenize text into training shards (train_*.bin, val_*.bin, meta.json).

    Use `--input stdlib` for the built-in corpus: the docstrings and comments of Python's standard library.

    Args:
        input: files, folders or globs (.txt: one document per file, see --txt-documents; .jsonl: one per line; .parquet: one per row).
        tokenizer: tokenizer folder (e.g. GPT-2's encoder.json + vocab.bpe, or one from `scratchllm tokenizer train`).
        out: output folder for shards and meta.json; written atomically.
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
        txt_documents: what one document is in a .txt file: the whole file (a book), each blank-line-separated paragraph, or each line (paragraphs and lines stream large corpus files).
        seed: seed of the train/val split.
        overwrite: replace an existing --out folder.
        progress: show a progress bar on stderr.
    """
    from scratchllm.data.prepare import prepare as run_prepare
    from scratchllm.data.prepare import summary

    inputs = list(input)
    if inputs == ["stdlib"] and not Path("stdlib").exists():
        from scratchllm.data.download import default_cache_dir
        from scratchllm.data.embedded import CORPUS_FILE, stdlib_corpus

        folder = default_cache_dir() / f"stdlib-corpus-py{sys.version_info.major}.{sys.version_info.minor}"
        if not (folder / CORPUS_FILE).is_file():
            print(f"scratchllm: extracting the standard-library corpus into {folder}", file=sys.stderr)
            stdlib_corpus(folder)
        inputs = [str(folder / CORPUS_FILE)]
    meta = run_prepare(
        inputs,
        tokenizer,
        out,
        text_field=text_field,
        val_fraction=val_fraction,
        workers=workers,
        shard_tokens=shard_tokens,
        min_chars=min_chars,
        max_symbol_ratio=max_symbol_ratio,
        max_repeated_line_ratio=max_repeated_line_ratio,
        strip_gutenberg=strip_gutenberg,
        encoding_errors=encoding_errors,
        txt_documents=txt_documents,
        seed=seed,
        overwrite=overwrite,
        progress=progress,
    )
    print(summary(meta))
    print(f"wrote {out}")


@positional("name")
def download(
    name: str = "",
    cache_dir: Path | None = None,
    force: bool = False,
    list: bool = False,
    mirror: str | None = None,
) -> None:
    """Download a known public file (checked against its sha256) into the cache and print its path.

    Args:
        name: registry entry (see --list).
        cache_dir: cache folder (default: $SCRATCHLLM_CACHE or ~/.cache/scratchllm).
        force: download again even when the file is cached.
        list: show the registry and exit.
        mirror: base URL that replaces each entry's host (e.g. a local mirror); also $SCRATCHLLM_MIRROR.
    """
    from scratchllm.data import download as dl

    if list:
        print(dl.registry_table())
        return
    if not name:
        raise ScratchLLMError(
            f"download: name a file to download; one of {', '.join(dl.REGISTRY)} (or --list)"
        )
    path = dl.download(name, cache_dir=cache_dir, force=force, mirror=mirror)
    print(path)
