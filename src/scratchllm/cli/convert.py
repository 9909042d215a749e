"""``scratchllm convert``: any model we read -> our checkpoint, a Hugging Face folder or a GGUF file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from scratchllm.errors import ScratchLLMError


def convert(
    input: Path,
    to: Literal["hf", "gguf", "scratchllm"],
    out: Path,
    gguf_type: Literal["f32", "f16", "q8_0"] | None = None,
    tokenizer: Path | None = None,
) -> None:
    """Convert a model, with its tokenizer and chat template, to another format.

    Args:
        input: our checkpoint folder, a Hugging Face folder or a .gguf file.
        to: hf (config.json + model.safetensors + tokenizer.json), gguf (one llama.cpp file) or scratchllm (our checkpoint, tokenizer in OUT/tokenizer).
        out: the folder (hf, scratchllm) or .gguf file to write; written atomically.
        gguf_type: with --to gguf, how weight matrices are stored: f32, f16 (default) or q8_0; vectors stay f32.
        tokenizer: use this tokenizer (folder or .gguf file) instead of the model's own.
    """
    from scratchllm.weights import load
    from scratchllm.weights.saving import save

    if gguf_type is not None and to != "gguf":
        raise ScratchLLMError(f"--gguf-type applies to --to gguf only, not --to {to}")
    if out.resolve() == input.resolve():
        raise ScratchLLMError(f"--out {out} is the input itself; write the conversion somewhere else")
    loaded = load(input, tokenizer=tokenizer)
    save(loaded, out, to, gguf_type or "f16")
    params = sum(p.numel() for p in loaded.model.parameters())
    kind = f"gguf ({gguf_type or 'f16'})" if to == "gguf" else to
    print(f"wrote {out}: {kind}, {params:,} parameters, tokenizer included", file=sys.stderr)
