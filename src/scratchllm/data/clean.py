"""Text cleaning, quality filters and exact-duplicate keys.

Each function is small and cheap on purpose: they run once per document inside the tokenizer workers, so any
per-character Python loop here would cap the throughput of ``prepare``. Everything is done with ``str`` methods,
``unicodedata`` and compiled regexes, which run in C.

The filters follow the spirit of the Gopher rules (Rae et al., 2021): drop documents that are too short, that are
mostly symbols (markup, tables of numbers, binary junk) or whose lines largely repeat (boilerplate, menus).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

import regex

# Control characters (Unicode category Cc) except tab and newline; \r is handled first (see normalize_text).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# A "symbol" is any character that is not a letter, a number or whitespace (punctuation counts).
_SYMBOLS = regex.compile(r"[^\p{L}\p{N}\p{M}\s]+")
_SPACE = regex.compile(r"\s+")
# Filters look at most this many characters of a long document (evenly spaced slices): an estimate is enough to
# tell prose from junk, and it keeps the per-document cost constant instead of proportional to the text.
SAMPLE_CHARS = 1 << 15
_GUTENBERG_START = re.compile(
    r"^\W*\*\*\* ?START OF (?:THE|THIS) PROJECT GUTENBERG.*$", re.IGNORECASE | re.MULTILINE
)
_GUTENBERG_END = re.compile(
    r"^\W*\*\*\* ?END OF (?:THE|THIS) PROJECT GUTENBERG.*$", re.IGNORECASE | re.MULTILINE
)


def normalize_text(text: str) -> str:
    """Unicode NFC, Windows/old-Mac line ends turned into ``\\n``, other control characters removed.

    NFC makes visually identical strings byte-identical (``"e" + U+0301`` becomes ``"é"``), so duplicates are
    found and the tokenizer sees one spelling. ``\\r`` is a control character too, but deleting it would glue
    lines together in old-Mac files, hence the replacement first.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.isascii() and not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    return _CONTROL.sub("", text)


def strip_gutenberg(text: str) -> str:
    """Keep only the book between Project Gutenberg's ``*** START OF ... ***`` and ``*** END OF ... ***`` lines.

    Text without the markers is returned unchanged, so the option is safe on mixed corpora.
    """
    start = _GUTENBERG_START.search(text)
    if start is not None:
        text = text[start.end() :]
    end = _GUTENBERG_END.search(text)
    if end is not None:
        text = text[: end.start()]
    return text.strip("\n") + "\n" if (start or end) else text


def symbol_ratio(text: str) -> float:
    """Fraction of non-whitespace characters that are neither letters nor numbers (0 for empty text)."""
    non_space = len(_SPACE.sub("", text))
    if non_space == 0:
        return 0.0
    return (len(text) - len(_SYMBOLS.sub("", text))) / non_space


def repeated_line_ratio(text: str) -> float:
    """Fraction of the characters in non-blank lines that belong to a line already seen earlier in the document.

    Counting characters (not lines) keeps plays and poems, where short lines such as ``ROMEO:`` repeat, while
    catching documents made of the same long boilerplate lines over and over.
    """
    lines = [line for line in map(str.strip, text.split("\n")) if line]
    total = sum(map(len, lines))
    if total == 0:
        return 0.0
    # every character beyond the first occurrence of each distinct line is repeated
    return (total - sum(map(len, set(lines)))) / total


def sample(text: str, max_chars: int = SAMPLE_CHARS, pieces: int = 8) -> str:
    """``text`` itself when short, else ``pieces`` evenly spaced slices totalling ``max_chars`` characters."""
    if len(text) <= max_chars:
        return text
    width = max_chars // pieces
    step = (len(text) - width) // (pieces - 1)
    return "\n".join(text[i * step : i * step + width] for i in range(pieces))


def dedup_key(text: str) -> bytes:
    """A 16-byte hash of the cleaned text without leading/trailing whitespace: equal keys mean duplicates."""
    return hashlib.blake2b(text.strip().encode("utf-8"), digest_size=16).digest()


@dataclass(frozen=True)
class Filters:
    """Quality thresholds; a document failing any of them is dropped (and counted under that name)."""

    #: documents shorter than this (after stripping whitespace) are dropped; empty ones always are
    min_chars: int = 1
    #: see :func:`symbol_ratio`, estimated on :func:`sample`; 1.0 disables the filter
    max_symbol_ratio: float = 0.5
    #: see :func:`repeated_line_ratio`; 1.0 disables the filter
    max_repeated_line_ratio: float = 0.5

    def reject_reason(self, text: str) -> str | None:
        """Name of the first filter ``text`` fails, or None when it passes all of them."""
        if len(text.strip()) < max(self.min_chars, 1):
            return "min_chars"
        if self.max_symbol_ratio < 1.0 and symbol_ratio(sample(text)) > self.max_symbol_ratio:
            return "symbol_ratio"
        if self.max_repeated_line_ratio < 1.0 and repeated_line_ratio(text) > self.max_repeated_line_ratio:
            return "repeated_line_ratio"
        return None
