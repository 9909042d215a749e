"""Test doubles shared by the generation tests (importable because tests/ is on sys.path)."""

from __future__ import annotations


class ByteTokenizer:
    """Stand-in tokenizer: one token per UTF-8 byte, id 256 = <|endoftext|>."""

    eot_id = 256

    def encode(self, text: str, allowed_special=()) -> list[int]:
        return list(text.encode("utf-8"))

    def decode_bytes(self, ids) -> bytes:
        return bytes(i for i in ids if i < 256)

    def decode(self, ids) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")
