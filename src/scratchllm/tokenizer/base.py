"""The one interface every tokenizer implements, and the special-token rules they all share.

Special tokens follow tiktoken's contract exactly, because users (and our parity tests) expect it:

* ``allowed_special`` text is emitted as the special id;
* ``disallowed_special`` text raises (default ``"all"``: any special not allowed is an error, so that user text can
  never smuggle in an ``<|endoftext|>`` by accident);
* with ``disallowed_special=()`` special text that is not allowed is encoded as ordinary text.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import regex

from scratchllm.atomic import atomic_folder
from scratchllm.errors import ScratchLLMError
from scratchllm.utf8 import read_json as read_json  # re-exported: the tokenizer modules read JSON through it

ENDOFTEXT = "<|endoftext|>"
META_FILE = "scratchllm_tokenizer.json"
FORMAT_VERSION = 1

SpecialSet = Collection[str] | Literal["all"]


@lru_cache(maxsize=64)
def special_regex(tokens: frozenset[str]) -> regex.Pattern[str]:
    """A regex matching any of ``tokens`` (longest first, so that overlapping specials are deterministic)."""
    ordered = sorted(tokens, key=lambda t: (-len(t), t))
    return regex.compile("|".join(regex.escape(t) for t in ordered))


class Tokenizer(ABC):
    """Text <-> token ids. Subclasses implement the ordinary (special-free) encoder and the byte decoder."""

    #: number of ids (ordinary tokens and special tokens)
    vocab_size: int
    #: special token text -> id
    special_tokens: dict[str, int]

    # ------------------------------------------------------------------------------------------ abstract
    @abstractmethod
    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ``text`` treating special-token text as plain text."""

    @abstractmethod
    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one id stands for (special tokens: their UTF-8 text)."""

    @abstractmethod
    def _save_files(self, folder: Path) -> dict[str, Any]:
        """Write this tokenizer's files into ``folder``; return the metadata (``kind`` etc.) to record."""

    # ------------------------------------------------------------------------------------------ shared
    @property
    def eot_id(self) -> int | None:
        """Id of ``<|endoftext|>`` when the vocabulary has it."""
        return self.special_tokens.get(ENDOFTEXT)

    def _special_plan(
        self, text: str, allowed_special: SpecialSet, disallowed_special: SpecialSet
    ) -> frozenset[str]:
        """Resolve tiktoken's allowed/disallowed arguments, raise on disallowed special text, return allowed."""
        all_special = frozenset(self.special_tokens)
        # as in tiktoken, allowing a special token this vocabulary lacks is harmless
        allowed = all_special if allowed_special == "all" else frozenset(allowed_special) & all_special
        disallowed = all_special - allowed if disallowed_special == "all" else frozenset(disallowed_special)
        if disallowed:
            match = special_regex(disallowed).search(text)
            if match is not None:
                raise ScratchLLMError(
                    f"text contains the special token {match.group()!r} at character {match.start()}; "
                    f"pass allowed_special={{{match.group()!r}}} to encode it as a special token, or "
                    "disallowed_special=() to encode it as plain text"
                )
        return allowed

    def encode(
        self,
        text: str,
        allowed_special: SpecialSet = frozenset(),
        disallowed_special: SpecialSet = "all",
    ) -> list[int]:
        """Encode ``text`` with tiktoken's special-token semantics (see the module docstring)."""
        allowed = self._special_plan(text, allowed_special, disallowed_special)
        if not allowed:
            return self.encode_ordinary(text)
        return self._encode_allowing(text, allowed)

    def _encode_allowing(self, text: str, allowed: frozenset[str]) -> list[int]:
        """Encode ``text``, turning the special tokens in ``allowed`` (checked, not empty) into their ids."""
        # Like tiktoken: find every special token, but only split at the allowed ones; the pieces between are
        # encoded independently, so the pre-tokenizer restarts after each special token.
        finder = special_regex(frozenset(self.special_tokens))
        ids: list[int] = []
        start = 0
        pos = 0
        while True:
            match = finder.search(text, pos)
            while match is not None and match.group() not in allowed:
                match = finder.search(text, match.start() + 1)
            end = len(text) if match is None else match.start()
            ids.extend(self.encode_ordinary(text[start:end]))
            if match is None:
                return ids
            ids.append(self.special_tokens[match.group()])
            start = pos = match.end()

    def encode_batch(
        self,
        texts: Sequence[str],
        num_threads: int = 8,
        allowed_special: SpecialSet = frozenset(),
        disallowed_special: SpecialSet = "all",
    ) -> list[list[int]]:
        """Encode many texts; threads help when the encoder releases the GIL (the tiktoken backend does)."""
        if allowed_special == frozenset() and disallowed_special == "all":
            fast = self._encode_ordinary_batch(texts, num_threads)
            if fast is not None:
                return fast

        def one(text: str) -> list[int]:
            return self.encode(text, allowed_special=allowed_special, disallowed_special=disallowed_special)

        if num_threads <= 1 or len(texts) <= 1:
            return [one(t) for t in texts]
        with ThreadPoolExecutor(max_workers=num_threads) as pool:
            return list(pool.map(one, texts))

    def _encode_ordinary_batch(self, texts: Sequence[str], num_threads: int) -> list[list[int]] | None:
        """A backend's own batch encoder for texts without special tokens, or ``None`` to encode one by one."""
        return None

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Concatenate the bytes of ``ids`` (a token may hold part of a UTF-8 character)."""
        return b"".join(self.token_bytes(i) for i in ids)

    def decode(self, ids: Iterable[int]) -> str:
        """Decode to text; bytes that are not valid UTF-8 become U+FFFD, as in tiktoken."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def _check_id(self, token_id: int) -> None:
        if not 0 <= token_id < self.vocab_size:
            raise ScratchLLMError(f"token id {token_id} is out of range; expected 0..{self.vocab_size - 1}")

    def save(self, folder: str | Path) -> Path:
        """Write the tokenizer (JSON/text only) to ``folder`` atomically, with a metadata file naming its kind."""
        folder = Path(folder)
        with atomic_folder(folder) as tmp:
            meta = {"format_version": FORMAT_VERSION, **self._save_files(tmp)}
            meta.setdefault("vocab_size", self.vocab_size)
            meta.setdefault("special_tokens", self.special_tokens)
            write_json(tmp / META_FILE, meta)
        return folder


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


