"""``scratchllm tokenizer train|encode|decode``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

from scratchllm.errors import ScratchLLMError


def _read_stdin(errors: str) -> str:
    from scratchllm.tokenizer.bpe_train import decode_text

    return decode_text(sys.stdin.buffer.read(), "stdin", errors)


def train(input: list[str], vocab_size: int, out: Path, pattern: str = "gpt2", **options: Any) -> None:
    """Train a byte-level BPE tokenizer on text files.

    The other options are those of scratchllm.tokenizer.train_bpe, with its defaults and help.

    Args:
        input: text files, folders or globs to learn merges from (any file type; hidden files are skipped).
        vocab_size: size of the final vocabulary, special tokens included.
        out: folder to write the tokenizer to.
        pattern: pre-tokenizer regex, or "gpt2" for GPT-2's pattern.
        **options: the keyword options of scratchllm.tokenizer.train_bpe.
    """
    import time

    from scratchllm.data.readers import expand_inputs
    from scratchllm.tokenizer.bpe import GPT2_PATTERN
    from scratchllm.tokenizer.bpe_train import train_bpe

    files = expand_inputs(input, suffixes=None)
    size = sum(f.stat().st_size for f in files)
    print(f"training on {len(files)} file(s), {size / 1e6:.1f} MB, vocab {vocab_size}", file=sys.stderr)
    start = time.perf_counter()
    tok = train_bpe(
        files, vocab_size, pattern=GPT2_PATTERN if pattern == "gpt2" else pattern, progress=True, **options
    )
    tok.save(out)
    print(f"wrote {out} (vocab {tok.vocab_size}) in {time.perf_counter() - start:.1f}s", file=sys.stderr)


def encode(
    tokenizer: Path,
    show: bool = False,
    specials: Literal["error", "allow", "text"] = "error",
    errors: Literal["strict", "replace"] = "strict",
    backend: Literal["auto", "python", "tiktoken"] = "auto",
) -> None:
    """Encode stdin to token ids on stdout (space separated).

    Args:
        tokenizer: tokenizer folder or .gguf file, or a model (our checkpoint, a Hugging Face folder) to use its tokenizer.
        show: print one token per line: its id and its text (bytes when not valid UTF-8 on their own).
        specials: special-token text in the input: an error, encoded as the special id, or encoded as text.
        errors: bytes of stdin that are not UTF-8: an error, or replaced with U+FFFD.
        backend: BPE encoder: tiktoken when installed (auto), the Python reference, or tiktoken.
    """
    from scratchllm.weights.loading import load_tokenizer

    tok = load_tokenizer(tokenizer, backend=backend)
    text = _read_stdin(errors)
    if specials == "allow":
        ids = tok.encode(text, allowed_special="all")
    elif specials == "text":
        ids = tok.encode(text, disallowed_special=())
    else:
        ids = tok.encode(text)
    if not show:
        sys.stdout.write(" ".join(map(str, ids)) + "\n")
        return
    special_ids = set(tok.special_tokens.values())
    for i in ids:
        data = tok.token_bytes(i)
        try:
            shown = repr(data.decode("utf-8"))
        except UnicodeDecodeError:
            shown = repr(data)
        sys.stdout.write(f"{i}\t{shown}{'  (special)' if i in special_ids else ''}\n")


def decode(tokenizer: Path) -> None:
    """Decode token ids on stdin (separated by spaces or newlines) to text on stdout.

    Args:
        tokenizer: tokenizer folder or .gguf file, or a model (our checkpoint, a Hugging Face folder) to use its tokenizer.
    """
    from scratchllm.weights.loading import load_tokenizer

    tok = load_tokenizer(tokenizer)
    ids = []
    for n, word in enumerate(_read_stdin("strict").split(), 1):
        try:
            value = int(word)
        except ValueError:
            raise ScratchLLMError(f"stdin: token {n} is {word[:40]!r}, expected an integer id") from None
        if not 0 <= value < tok.vocab_size:
            raise ScratchLLMError(
                f"stdin: token {n} is id {value}, out of range; expected 0..{tok.vocab_size - 1}"
            )
        ids.append(value)
    sys.stdout.write(tok.decode(ids))
