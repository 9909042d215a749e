"""``scratchllm tokenizer train|encode|decode``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from scratchllm.errors import ScratchLLMError


def resolve_inputs(patterns: list[str]) -> list[Path]:
    """Expand files, folders (every non-hidden file inside, recursively) and globs; each must give a file."""
    import glob

    files: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.parts)
            )
            if not found:
                raise ScratchLLMError(f"{pattern}: folder contains no files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif glob.has_magic(pattern):
            found = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
            if not found:
                raise ScratchLLMError(f"{pattern}: no files match this pattern")
            files.extend(found)
        else:
            raise ScratchLLMError(f"{pattern}: no such file or folder")
    for file in files:
        if file.stat().st_size == 0:
            raise ScratchLLMError(f"{file}: empty file; expected text to train on")
    return files


def _read_stdin(errors: str) -> str:
    from scratchllm.tokenizer.bpe_train import decode_text

    return decode_text(sys.stdin.buffer.read(), "stdin", errors)


def train(
    input: list[str],
    vocab_size: int,
    out: Path,
    pattern: str = "gpt2",
    special_tokens: list[str] = ["<|endoftext|>"],  # noqa: B006 (read-only default shown in --help)
    errors: Literal["strict", "replace"] = "strict",
    workers: int = 2,
) -> None:
    """Train a byte-level BPE tokenizer on text files.

    Args:
        input: text files, folders or globs to learn merges from.
        vocab_size: size of the final vocabulary, special tokens included.
        out: folder to write the tokenizer to.
        pattern: pre-tokenizer regex, or "gpt2" for GPT-2's pattern.
        special_tokens: special tokens, given the last ids.
        errors: what to do with bytes that are not UTF-8: stop with an error, or replace them with U+FFFD.
        workers: processes for counting pre-tokens.
    """
    import time

    from scratchllm.tokenizer.bpe import GPT2_PATTERN
    from scratchllm.tokenizer.bpe_train import train_bpe

    files = resolve_inputs(input)
    size = sum(f.stat().st_size for f in files)
    print(f"training on {len(files)} file(s), {size / 1e6:.1f} MB, vocab {vocab_size}", file=sys.stderr)
    start = time.perf_counter()
    tok = train_bpe(
        files,
        vocab_size,
        pattern=GPT2_PATTERN if pattern == "gpt2" else pattern,
        special_tokens=special_tokens,
        workers=workers,
        errors=errors,
        progress=True,
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
        tokenizer: tokenizer folder.
        show: print one token per line: its id and its text (bytes when not valid UTF-8 on their own).
        specials: special-token text in the input: an error, encoded as the special id, or encoded as text.
        errors: bytes of stdin that are not UTF-8: an error, or replaced with U+FFFD.
        backend: BPE encoder: tiktoken when installed (auto), the Python reference, or tiktoken.
    """
    from scratchllm.tokenizer import load

    tok = load(tokenizer, backend=backend)
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
        tokenizer: tokenizer folder.
    """
    from scratchllm.tokenizer import load

    tok = load(tokenizer)
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
