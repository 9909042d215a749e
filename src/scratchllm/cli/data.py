"""``scratchllm prepare`` and ``scratchllm download``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from scratchllm.errors import ScratchLLMError


def _stdlib_or(inputs: list[str]) -> list[str]:
    """``["stdlib"]`` (when no such file exists) -> the standard-library corpus, extracted once into the cache."""
    if inputs != ["stdlib"] or Path("stdlib").exists():
        return inputs
    from scratchllm.data.download import default_cache_dir
    from scratchllm.data.stdlib_corpus import CORPUS_FILE, stdlib_corpus

    folder = default_cache_dir() / f"stdlib-corpus-py{sys.version_info.major}.{sys.version_info.minor}"
    if not (folder / CORPUS_FILE).is_file():
        print(f"scratchllm: extracting the standard-library corpus into {folder}", file=sys.stderr)
        stdlib_corpus(folder)
    return [str(folder / CORPUS_FILE)]


def prepare(input: list[str], tokenizer: Path, out: Path, **options: Any) -> None:
    """Clean, deduplicate and tokenize text into training shards (train_*.bin, val_*.bin, meta.json).

    Use `--input stdlib` for the built-in corpus: the docstrings and comments of Python's standard library.
    The other options are those of scratchllm.data.prepare.prepare, with its defaults and help.

    Args:
        input: files, folders or globs (.txt: one document per file, see --txt-documents; .jsonl: one per line; .parquet: one per row).
        tokenizer: tokenizer folder (e.g. GPT-2's encoder.json + vocab.bpe, or one from `scratchllm tokenizer train`).
        out: output folder for shards and meta.json; written atomically.
        **options: the keyword options of scratchllm.data.prepare.prepare.
    """
    from scratchllm.data.prepare import prepare as prepare_shards
    from scratchllm.data.prepare import summary

    meta = prepare_shards(_stdlib_or(input), tokenizer, out, **options)
    print(summary(meta))
    print(f"wrote {out}")


def download(name: str = "", list: bool = False, **options: Any) -> None:
    """Download a known public file (checked against its sha256) into the cache and print its path.

    The other options are those of scratchllm.data.download.download, with its defaults and help.

    Args:
        name: registry entry (see --list); may be given bare: `scratchllm download NAME`.
        list: show the registry and exit.
        **options: the keyword options of scratchllm.data.download.download.
    """
    from scratchllm.data import download as dl

    if list:
        print(dl.registry_table())
        return
    if not name:
        raise ScratchLLMError(f"download: name a file to download; one of {', '.join(dl.REGISTRY)} (or --list)")
    print(dl.download(name, **options))
