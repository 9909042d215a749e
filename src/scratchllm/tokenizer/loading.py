"""``load(path)``: open any tokenizer we know (a folder of ours, GPT-2's or Hugging Face's, or a ``.gguf`` file)."""

from __future__ import annotations

from pathlib import Path

from scratchllm.errors import ScratchLLMError
from scratchllm.tokenizer.base import META_FILE, Tokenizer, read_json
from scratchllm.tokenizer.bpe import Backend, BPETokenizer
from scratchllm.tokenizer.gpt2 import gpt2_files, load_gpt2
from scratchllm.tokenizer.hf import TOKENIZER_FILE, load_hf_tokenizer
from scratchllm.tokenizer.simple import SimpleTokenizer

EXPECTED = (
    f"{META_FILE} (a scratchllm tokenizer), {TOKENIZER_FILE} (Hugging Face), encoder.json + vocab.bpe "
    "(OpenAI GPT-2) or vocab.json + merges.txt (Hugging Face GPT-2)"
)


def load(folder: str | Path, backend: Backend = "auto") -> Tokenizer:
    """Load a tokenizer: a folder (ours, Hugging Face ``tokenizer.json``, OpenAI's or Hugging Face's GPT-2 files)
    or a ``.gguf`` file (its ``tokenizer.ggml.*`` metadata).

    Args:
        folder: the tokenizer folder or GGUF file.
        backend: encoder for our BPE vocabularies: ``"auto"`` (tiktoken when installed), ``"python"``,
            ``"tiktoken"``. Hugging Face and GGUF vocabularies always use their own (Python) encoder.
    """
    folder = Path(folder)
    if folder.is_file() and folder.suffix == ".gguf":
        from scratchllm.weights.gguf import gguf_tokenizer

        return gguf_tokenizer(folder)
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
        if kind == "hf":
            return load_hf_tokenizer(folder)
        raise ScratchLLMError(f"{meta_path}: unknown tokenizer kind {kind!r}; expected 'bpe', 'simple' or 'hf'")
    if (folder / TOKENIZER_FILE).is_file():
        return load_hf_tokenizer(folder)
    if gpt2_files(folder) is not None:
        return load_gpt2(folder, backend=backend)
    raise ScratchLLMError(f"{folder}: not a tokenizer folder (expected {EXPECTED})")
