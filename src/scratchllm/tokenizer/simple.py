"""A word-level tokenizer for teaching: split on punctuation and whitespace, look words up in a vocabulary.

It shows why real tokenizers work on bytes: any word not seen when the vocabulary was built becomes ``<|unk|>``
and whitespace is lost (decoding re-inserts single spaces), so ``decode(encode(text))`` is only approximately
``text``. Byte-level BPE (:mod:`scratchllm.tokenizer.bpe`) has neither problem.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import regex

from scratchllm.errors import ScratchLLMError
from scratchllm.tokenizer.base import ENDOFTEXT, Tokenizer, read_json, write_json

UNK = "<|unk|>"
VOCAB_FILE = "vocab.json"
_SPLIT = regex.compile(r'([,.:;?_!"()\']|--|\s)')
_SPACE_BEFORE_PUNCT = regex.compile(r'\s+([,.:;?!"()\'])')


def split_words(text: str) -> list[str]:
    """Words and punctuation marks of ``text``, whitespace dropped."""
    return [w for w in (p.strip() for p in _SPLIT.split(text)) if w]


class SimpleTokenizer(Tokenizer):
    """Word-level vocabulary (sorted words, then ``<|endoftext|>`` and ``<|unk|>``)."""

    def __init__(self, vocab: dict[str, int]) -> None:
        for token in (ENDOFTEXT, UNK):
            if token not in vocab:
                raise ScratchLLMError(f"simple tokenizer vocabulary lacks {token}")
        if sorted(vocab.values()) != list(range(len(vocab))):
            raise ScratchLLMError("simple tokenizer vocabulary ids must be 0..N-1 without repeats")
        self.vocab = dict(vocab)
        self.id_to_word = {i: w for w, i in vocab.items()}
        self.vocab_size = len(vocab)
        self.special_tokens = {ENDOFTEXT: vocab[ENDOFTEXT]}
        self.unk_id = vocab[UNK]

    @classmethod
    def from_text(cls, text: str) -> SimpleTokenizer:
        """Build the vocabulary from every distinct word of ``text``."""
        words = sorted(set(split_words(text)) - {ENDOFTEXT, UNK})
        return cls({w: i for i, w in enumerate([*words, ENDOFTEXT, UNK])})

    def encode_ordinary(self, text: str) -> list[int]:
        vocab, unk = self.vocab, self.unk_id
        # special text is plain text here, and as a word it is unknown
        return [unk if w in self.special_tokens else vocab.get(w, unk) for w in split_words(text)]

    def token_bytes(self, token_id: int) -> bytes:
        self._check_id(token_id)
        return self.id_to_word[token_id].encode("utf-8")

    def decode(self, ids: Iterable[int]) -> str:
        """Join words with single spaces, then remove the space before punctuation."""
        words = []
        for i in ids:
            if not isinstance(i, int):
                raise ScratchLLMError(f"token id {i!r} is not an integer")
            self._check_id(i)
            words.append(self.id_to_word[i])
        return _SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(words))

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return self.decode(ids).encode("utf-8")

    def _save_files(self, folder: Path) -> dict[str, Any]:
        write_json(folder / VOCAB_FILE, self.vocab)
        return {"kind": "simple"}

    @classmethod
    def from_folder(cls, folder: Path) -> SimpleTokenizer:
        vocab = read_json(folder / VOCAB_FILE)
        if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
            raise ScratchLLMError(f"{folder / VOCAB_FILE}: expected a JSON object of word -> integer id")
        return cls(vocab)

    def __repr__(self) -> str:
        return f"SimpleTokenizer(vocab_size={self.vocab_size})"
