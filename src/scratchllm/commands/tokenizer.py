"""``scratchllm tokenizer train|encode|decode``."""

from __future__ import annotations

from pathlib import Path

from scratchllm.errors import ScratchLLMError


def train(input: list[str], vocab_size: int, out: Path) -> None:
    """Train a byte-level BPE tokenizer on text files.

    Args:
        input: text files, folders or globs to learn merges from.
        vocab_size: size of the final vocabulary, special tokens included.
        out: folder to write the tokenizer to.
    """
    raise ScratchLLMError("tokenizer train: not implemented yet")


def encode(tokenizer: Path) -> None:
    """Encode stdin to token ids on stdout.

    Args:
        tokenizer: tokenizer folder.
    """
    raise ScratchLLMError("tokenizer encode: not implemented yet")


def decode(tokenizer: Path) -> None:
    """Decode token ids on stdin to text on stdout.

    Args:
        tokenizer: tokenizer folder.
    """
    raise ScratchLLMError("tokenizer decode: not implemented yet")
