"""GPT-2's tokenizer from OpenAI's files (``encoder.json`` + ``vocab.bpe``) or Hugging Face's copies of them
(``vocab.json`` + ``merges.txt``, same content under other names).

GPT-2 stores byte tokens as *printable strings*: every byte is mapped to a visible Unicode character so that the
files are readable text (a space becomes ``Ġ``, a newline ``Ċ``). :func:`bytes_to_unicode` rebuilds that mapping;
undoing it turns the files into the same rank table our own BPE uses, so one encoder serves both.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from scratchllm.errors import ScratchLLMError
from scratchllm.tokenizer.base import ENDOFTEXT, read_json
from scratchllm.tokenizer.bpe import GPT2_PATTERN, Backend, BPETokenizer
from scratchllm.utf8 import read_utf8

__all__ = ["GPT2_PATTERN", "bytes_to_unicode", "gpt2_files", "load_gpt2"]

#: (vocabulary file, merges file) pairs, OpenAI's names first.
GPT2_FILE_NAMES = (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt"))


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map.

    Bytes that are already printable Latin-1 characters (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) stand for
    themselves; the other 68 (control characters, space, soft hyphen...) are given the code points 256, 257, ...
    in byte order.
    """
    printable = set(range(ord("!"), ord("~") + 1))
    printable |= set(range(ord("¡"), ord("¬") + 1))
    printable |= set(range(ord("®"), ord("ÿ") + 1))
    mapping: dict[int, str] = {}
    extra = 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def gpt2_files(folder: Path) -> tuple[Path, Path] | None:
    """The (vocabulary, merges) files of a GPT-2 folder, or None when ``folder`` is not one."""
    for vocab_name, merges_name in GPT2_FILE_NAMES:
        if (folder / vocab_name).is_file() and (folder / merges_name).is_file():
            return folder / vocab_name, folder / merges_name
    return None


def load_gpt2(folder: str | Path, backend: Backend = "auto") -> BPETokenizer:
    """GPT-2's tokenizer (50,257 ids, ``<|endoftext|>`` = 50256) from an OpenAI or Hugging Face folder.

    The rank table is rebuilt from the merges file (single bytes keep their ids from the vocabulary, merge number
    ``k`` gets id ``256 + k``) and checked against the vocabulary file, so a mismatched pair of files is caught.
    """
    folder = Path(folder)
    files = gpt2_files(folder)
    if files is None:
        expected = " or ".join(f"{v} + {m}" for v, m in GPT2_FILE_NAMES)
        raise ScratchLLMError(f"{folder}: not a GPT-2 tokenizer folder (expected {expected})")
    vocab_path, merges_path = files
    encoder = read_json(vocab_path)
    if not isinstance(encoder, dict):
        raise ScratchLLMError(f"{vocab_path}: expected a JSON object of token -> id")
    byte_of = {ch: b for b, ch in bytes_to_unicode().items()}

    def to_bytes(token: str, where: str) -> bytes:
        try:
            return bytes(byte_of[ch] for ch in token)
        except KeyError as exc:
            raise ScratchLLMError(
                f"{where}: {token!r} uses {exc.args[0]!r}, not a GPT-2 byte character"
            ) from None

    special = {t: i for t, i in encoder.items() if t.startswith("<|") and t.endswith("|>")}
    ranks: dict[bytes, int] = {}
    for b, ch in bytes_to_unicode().items():
        if ch not in encoder:
            raise ScratchLLMError(f"{vocab_path}: single-byte token {ch!r} (byte {b}) is missing")
        ranks[bytes([b])] = encoder[ch]
    lines = read_utf8(merges_path).split("\n")
    for lineno, line in enumerate(lines, 1):
        if not line or line.startswith("#version"):
            continue
        parts = line.split(" ")
        where = f"{merges_path}:{lineno}"
        if len(parts) != 2:
            raise ScratchLLMError(f"{where}: expected two tokens separated by one space, got {line!r}")
        merged = parts[0] + parts[1]
        token = to_bytes(merged, where)
        rank = len(ranks)
        if encoder.get(merged) != rank:
            raise ScratchLLMError(
                f"{where}: merge {line!r} would be id {rank} but {vocab_path.name} says {encoder.get(merged)}"
            )
        ranks[token] = rank
    if len(ranks) + len(special) != len(encoder):
        raise ScratchLLMError(
            f"{vocab_path}: {len(encoder)} tokens but the merges and specials explain {len(ranks) + len(special)}"
        )
    if ENDOFTEXT not in special:
        raise ScratchLLMError(f"{vocab_path}: no {ENDOFTEXT} token")
    return BPETokenizer(ranks, GPT2_PATTERN, special, backend=backend, name="gpt2")
