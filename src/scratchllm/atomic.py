"""Atomic writes: a file or folder users keep is either the old version or the new one, never half of each.

The recipe is the classic one: write everything under a temporary name in the *same* folder (so the final rename
stays on one filesystem), flush and ``fsync`` it, then ``os.replace`` it onto the final name, which POSIX and
Windows perform as one step for files. A crash before the rename leaves the old file and a hidden temporary one
(``.NAME.tmp-*``); a crash after it leaves the new file.

A folder cannot be renamed over a non-empty folder, so :func:`atomic_folder` replaces one in two renames (old
aside, new in) and deletes the old copy last: a crash between them leaves the complete old folder under a hidden
``.NAME.old-*`` name beside it, never a mixture.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def fsync_path(path: str | Path) -> None:
    """Flush a file's (or a folder's entries') data to disk; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; once the block has written it, fsync and rename it onto ``path``.

    For writers that want a file name (``safetensors.save_file``, ``matplotlib.savefig``, ``csv``). If the block
    raises, the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return ``path``."""
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; return ``path``."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data: Any, *, indent: int = 1) -> Path:
    """Write ``data`` as UTF-8 JSON (non-ASCII kept readable, newline at the end) to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def atomic_folder(folder: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``folder``; when the block succeeds it becomes ``folder``.

    An existing ``folder`` is replaced only once the new one is complete (see the module docstring). If the block
    raises, the temporary folder is removed and ``folder`` is untouched.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        yield tmp
        for child in tmp.rglob("*"):
            if child.is_file():
                fsync_path(child)
        fsync_path(tmp)
        replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_folder(source: str | Path, target: str | Path) -> None:
    """Rename the complete folder ``source`` to ``target``, moving an existing ``target`` aside first."""
    source, target = Path(source), Path(target)
    if not target.exists():
        os.replace(source, target)
    else:
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
        os.replace(source, target)
        shutil.rmtree(old, ignore_errors=True)
    fsync_path(target.parent)
