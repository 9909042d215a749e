"""``scratchllm demo``: the whole pipeline on the embedded default corpus."""

from __future__ import annotations

from pathlib import Path

from scratchllm.errors import ScratchLLMError


def demo(out_dir: Path = Path("runs/demo")) -> None:
    """Train a tokenizer and a small GPT on the Python standard library's docstrings, then generate text.

    Args:
        out_dir: run folder.
    """
    raise ScratchLLMError("demo: not implemented yet")
