"""``scratchllm prepare`` and ``scratchllm download``."""

from __future__ import annotations

from pathlib import Path

from scratchllm.errors import ScratchLLMError


def prepare(input: list[str], tokenizer: Path, out: Path) -> None:
    """Clean, deduplicate and tokenize text into training shards.

    Args:
        input: files, folders or globs (.txt, .jsonl, .parquet).
        tokenizer: tokenizer folder.
        out: output folder for shards and meta.json.
    """
    raise ScratchLLMError("prepare: not implemented yet")


def download(name: str) -> None:
    """Download a known public corpus or file into the cache.

    Args:
        name: which corpus.
    """
    raise ScratchLLMError("download: not implemented yet")
