"""One way to turn bytes into text: UTF-8, with an error that says where the first bad byte is.

Every file the project reads as text (corpora, tokenizer files, YAML configs, and every JSON file: configs,
``meta.json``, checkpoint metadata) and stdin goes through here, so a bad byte is always reported the same way:
the file (and line), the byte offset, the byte, and the command-line switch that would replace bad bytes with
U+FFFD where the command has one. :func:`read_json` adds the same for bad JSON (file, line, column), and
:func:`read_jsonl_objects` for JSON Lines files (file and line).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scratchllm.errors import ScratchLLMError


def decode_utf8(
    data: bytes,
    where: str,
    errors: str = "strict",
    *,
    base_offset: int = 0,
    replace_flag: str | None = None,
) -> str:
    """Decode ``data``; with ``errors="strict"`` a bad byte raises a one-line :class:`ScratchLLMError`.

    Args:
        where: what to name in the message (``file``, ``file:line``, ``stdin``).
        errors: ``"strict"`` or ``"replace"`` (bad bytes become U+FFFD).
        base_offset: where ``data`` starts in its file, so the offset reported is the file's.
        replace_flag: the switch to suggest (``--errors``), when the command has one.
    """
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as exc:
        hint = f"; pass {replace_flag} replace to substitute U+FFFD" if replace_flag else ""
        raise ScratchLLMError(
            f"{where}: not UTF-8 text (byte offset {base_offset + exc.start}: 0x{data[exc.start]:02x}){hint}"
        ) from None


def read_utf8(path: Path, errors: str = "strict", *, replace_flag: str | None = None) -> str:
    """Read a whole text file; a missing file, a folder or a bad byte gives a one-line error naming ``path``."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ScratchLLMError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ScratchLLMError(f"{path}: is a folder, expected a text file") from None
    return decode_utf8(data, str(path), errors, replace_flag=replace_flag)


def read_json(path: Path) -> Any:
    """Read a UTF-8 JSON file; unreadable or invalid JSON gives a one-line error naming ``path`` and the line."""
    try:
        return json.loads(read_utf8(path))
    except json.JSONDecodeError as exc:
        raise ScratchLLMError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None


def read_jsonl_objects(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line of a JSON Lines file.

    A line that is not valid JSON, or not a JSON object, is a one-line error naming the file and the line.
    """
    records = []
    for n, line in enumerate(read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ScratchLLMError(f"{path}:{n}: invalid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise ScratchLLMError(f"{path}:{n}: expected a JSON object per line, got {type(record).__name__}")
        records.append((n, record))
    return records
