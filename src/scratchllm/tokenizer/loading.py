"""``load(folder)``: open any tokenizer folder we know, detecting its kind from the files inside."""

from __future__ import annotations

from pathlib import Path

from scratchllm.errors import ScratchLLMError
from scratchllm.tokenizer.base import META_FILE, Tokenizer, read_json
from scratchllm.tokenizer.bpe import Backend, BPETokenizer
from scratchllm.tokenizer.gpt2 import gpt2_files, load_gpt2
from scratchllm.tokenizer.simple import SimpleTokenizer

EXPECTED = (
    f"{META_FILE} (a scratchllm tokenizer), encoder.json + vocab.bpe (OpenAI GPT-2) "
    "or vocab.json + merges.txt (Hugging Face GPT-2)"
)


def load(folder: str | Path, backend: Backend = "auto") -> Tokenizer:
    """Load a tokenizer folder: ours (BPE or simple), OpenAI's GPT-2 files or Hugging Face's GPT-2 files.

    Args:
        folder: the tokenizer folder.
        backend: encoder for BPE vocabularies: ``"auto"`` (tiktoken when installed), ``"python"``, ``"tiktoken"``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ScratchLLMError(f"{folder}: tokenizer folder not found (expected a folder with {EXPECTED})")
    meta_path = folder / META_FILE
    if meta_path.is_file():
        meta = read_json(meta_path)
        kind = meta.get("kind") if isinstance(meta, dict) else None
        if kind == "bpe":
            return BPETokenizer.from_folder(folder, meta, backend=backend)
        if kind == "simple":
            return SimpleTokenizer.from_folder(folder)
        raise ScratchLLMError(f"{meta_path}: unknown tokenizer kind {kind!r}; expected 'bpe' or 'simple'")
    if gpt2_files(folder) is not None:
        return load_gpt2(folder, backend=backend)
    raise ScratchLLMError(f"{folder}: not a tokenizer folder (expected {EXPECTED})")
