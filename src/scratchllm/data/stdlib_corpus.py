"""A default corpus that every machine already has: the docstrings and comments of Python's standard library.

It is English prose about programming written by many authors over thirty years, a few megabytes in size, and
it ships with every Python installation, so the quick-start needs no download and no network. The text is
extracted at run time (nothing is copied into this project): ``ast`` finds module, class and function docstrings,
``tokenize`` finds comments, and each module becomes one document, in sorted path order so the corpus is the same
on every run of the same Python.

The text is under the PSF licence of the Python installation it comes from.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import re
import sysconfig
import tempfile
import tokenize
from collections.abc import Iterator
from pathlib import Path

from scratchllm.errors import ScratchLLMError

CORPUS_FILE = "stdlib_docs.jsonl"
#: folders that hold test suites, third-party packages or generated data rather than library code
SKIP_DIRS = frozenset(
    {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "_bundled", "turtledemo"}
)


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None) -> list[Path]:
    """Every ``.py`` file of the standard library outside test suites and site-packages, sorted."""
    root = root or stdlib_dir()
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        found.extend(Path(folder) / name for name in files if name.endswith(".py"))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


# One pass of a small lexer finds what we need: string literals (to skip them, and to spot docstrings), comments,
# brackets (a string inside brackets is never a docstring) and newlines. Python's own ``tokenize`` and ``ast`` give
# the same answer but are about ten times slower on the ~12 MB of the standard library (a test checks agreement).
_STRING = "|".join(
    (
        r"'''(?:[^'\\]|\\.|'(?!''))*'''",
        r'"""(?:[^"\\]|\\.|"(?!""))*"""',
        r"'(?:[^'\\\n]|\\.)*'",
        r'"(?:[^"\\\n]|\\.)*"',
    )
)
_LEXER = re.compile(
    rf"(?P<string>[rRbBuUfF]{{0,2}}(?:{_STRING}))|(?P<comment>#[^\n]*)"
    r"|(?P<open>[(\[{])|(?P<close>[)\]}])|(?P<newline>\n)",
    re.DOTALL,
)
_REST_OF_LINE = re.compile(r"[ \t]*(?:#[^\n]*)?(?:\n|$)")
_SKIP_COMMENT = ("-*-", "noqa", "type:", "pragma", "pylint", "fmt:")


def scan_module(source: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(docstrings, comments) of a module as (line, text) pairs.

    A docstring is a string literal standing alone on its logical line as the first statement of the module or
    of a block (the previous code ends with ``:``), cleaned like :func:`inspect.cleandoc`. Comments are the text
    after ``#``; consecutive comment lines form one paragraph; pragmas and separator lines are dropped.
    """
    docstrings: list[tuple[int, str]] = []
    comments: list[tuple[int, str]] = []
    depth = 0
    line = 1
    last_code: str | None = None  # last non-blank code character seen (None: start of file)
    line_start = True
    pos = 0
    block: list[str] = []
    block_first = block_last = -10
    for match in _LEXER.finditer(source):
        gap = source[pos : match.start()].strip()
        if gap:
            last_code = gap[-1]
            line_start = False
        pos = match.end()
        kind = match.lastgroup
        token = match.group()
        if kind == "newline":
            line += 1
            if depth == 0 and last_code != "\\":
                line_start = True
        elif kind == "comment":
            text = token.lstrip("#").strip()
            if (line == 1 and token.startswith("#!")) or not text or text.startswith(_SKIP_COMMENT):
                continue
            if set(text) <= set("-=#*~_+"):
                continue
            if block and line != block_last + 1:
                comments.append((block_first, " ".join(block)))
                block = []
            if not block:
                block_first = line
            block.append(text)
            block_last = line
        elif kind == "string":
            if (
                depth == 0
                and line_start
                and last_code in (None, ":")
                and token[0] not in "bBfF"
                and token[1:2] not in ("b", "B", "f", "F")
                and _REST_OF_LINE.match(source, pos)
            ):
                try:
                    value = ast.literal_eval(token)
                except (ValueError, SyntaxError, MemoryError):
                    value = None
                if isinstance(value, str) and value.strip():
                    docstrings.append((line, inspect.cleandoc(value)))
            line += token.count("\n")
            last_code = token[-1]
            line_start = False
        else:
            depth = depth + 1 if kind == "open" else max(depth - 1, 0)
            last_code = token
            line_start = False
    if block:
        comments.append((block_first, " ".join(block)))
    return docstrings, comments


def module_text(path: Path) -> str:
    """Docstrings and comments of one module in source order, separated by blank lines ("" when unreadable)."""
    try:
        with tokenize.open(path) as handle:  # honours the file's coding declaration
            source = handle.read()
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return ""
    docstrings, comments = scan_module(source)
    pieces = sorted(docstrings + comments, key=lambda item: item[0])
    return "\n\n".join(text for _, text in pieces if text)


def iter_stdlib_documents(root: Path | None = None) -> Iterator[dict[str, str]]:
    """``{"module": "json.decoder", "text": ...}`` for every stdlib module with any docstring or comment."""
    root = root or stdlib_dir()
    for path in stdlib_files(root):
        text = module_text(path)
        if text.strip():
            module = path.relative_to(root).with_suffix("").as_posix().replace("/", ".")
            yield {"module": module.removesuffix(".__init__"), "text": text + "\n"}


def stdlib_corpus(out_dir: str | Path, max_bytes: int | None = None) -> Path:
    """Write the corpus as ``out_dir/stdlib_docs.jsonl`` (one module per line); return that path.

    ``max_bytes`` stops after the document that brings the text past that many UTF-8 bytes (for quick tests).
    The file is written to a temporary name and renamed, so it is either complete or absent.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / CORPUS_FILE
    fd, tmp_name = tempfile.mkstemp(prefix=f".{CORPUS_FILE}.", dir=out)
    total = documents = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for doc in iter_stdlib_documents():
                handle.write(json.dumps(doc, ensure_ascii=False) + "\n")
                total += len(doc["text"].encode("utf-8"))
                documents += 1
                if max_bytes is not None and total >= max_bytes:
                    break
        if documents == 0:
            raise ScratchLLMError(
                f"{stdlib_dir()}: found no standard-library modules with docstrings or comments"
            )
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target
