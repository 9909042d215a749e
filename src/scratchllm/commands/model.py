"""``scratchllm generate``."""

from __future__ import annotations

from pathlib import Path

from scratchllm.errors import ScratchLLMError


def generate(model: Path, prompt: str) -> None:
    """Generate text from a checkpoint.

    Args:
        model: our checkpoint folder or a Hugging Face GPT-2 folder.
        prompt: text to continue.
    """
    raise ScratchLLMError("generate: not implemented yet")
