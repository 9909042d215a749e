"""``scratchllm pretrain``."""

from __future__ import annotations

from pathlib import Path

from scratchllm.errors import ScratchLLMError


def pretrain(out_dir: Path = Path("runs/pretrain")) -> None:
    """Pretrain a GPT on prepared token shards.

    Args:
        out_dir: run folder.
    """
    raise ScratchLLMError("pretrain: not implemented yet")
