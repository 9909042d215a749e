"""Read documents from .txt, .jsonl and .parquet files, one at a time, naming the place of any bad input.

A *document* is the unit that deduplication, filtering and the train/val split work on and that ``<|endoftext|>``
separates: one line of a ``.jsonl`` file, one row of a ``.parquet`` file, and for ``.txt`` by default the whole
file (a book). A large ``.txt`` corpus usually holds many documents, one per line or separated by blank lines (a
Wikipedia dump, a crawl); ``txt_documents="lines"`` or ``"paragraphs"`` reads those one at a time. Readers stream,
so a corpus larger than memory is fine as long as each single document fits.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Literal, get_args

from scratchllm import utf8
from scratchllm.errors import ScratchLLMError

SUPPORTED_SUFFIXES = (".txt", ".jsonl", ".parquet")
EncodingErrors = Literal["strict", "replace"]
TxtDocuments = Literal["file", "paragraphs", "lines"]
TXT_DOCUMENTS: tuple[str, ...] = get_args(TxtDocuments)
# A .txt read as one document is held in memory whole; past this size that is probably not what was meant.
LARGE_TXT_BYTES = 1 << 30


@dataclass(frozen=True)
class Document:
    """One document and where it came from (``where`` is ``file`` or ``file:line`` for error messages)."""

    text: str
    where: str
    nbytes: int  # size of the raw document in its file; drives the progress bar's MB/s


def expand_inputs(
    inputs: Sequence[str | Path], suffixes: Sequence[str] | None = SUPPORTED_SUFFIXES
) -> list[Path]:
    """Turn files, folders and globs into a de-duplicated list of non-empty files; the one place that does it.

    A folder gives every file below it (recursively) whose suffix is in ``suffixes``, skipping hidden files and
    folders (``.git``); a glob gives the files it matches (``**`` recurses). With ``suffixes=None`` any file is
    taken (the tokenizer trains on raw bytes of any text file); otherwise a file named outright must have one of
    them too. Order is deterministic (sorted within each input, inputs in the order given) so the same command
    always writes the same shards. Errors name the input: a missing path, a folder or pattern that gives no
    file, an unsupported suffix, an empty file.
    """
    if not inputs:
        raise ScratchLLMError("--input: no input files given; expected files, folders or globs")
    wanted = None if suffixes is None else tuple(s.lower() for s in suffixes)

    def accepted(path: Path) -> bool:
        return wanted is None or path.suffix.lower() in wanted

    files: list[Path] = []
    for item in inputs:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and accepted(p) and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                kinds = "" if wanted is None else f" {', '.join(wanted)}"
                raise ScratchLLMError(f"{path}: folder holds no{kinds} files to read")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif glob.has_magic(text):
            found = sorted(Path(p) for p in glob.glob(text, recursive=True) if os.path.isfile(p))
            if not found:
                raise ScratchLLMError(f"{text}: the pattern matches no files")
            files.extend(found)
        else:
            raise ScratchLLMError(f"{text}: no such file or folder")
    unique = list(dict.fromkeys(p.resolve() for p in files))
    for path in unique:
        if not accepted(path):
            raise ScratchLLMError(
                f"{path}: unsupported file type {path.suffix or '(none)'!r}; expected one of {', '.join(wanted or ())}"
            )
        if path.stat().st_size == 0:
            raise ScratchLLMError(f"{path}: file is empty; expected text")
    return unique


def decode_utf8(data: bytes, where: str, errors: EncodingErrors, base_offset: int = 0) -> str:
    """UTF-8 with errors that name ``where``, the byte offset and ``prepare``'s switch for bad bytes."""
    return utf8.decode_utf8(data, where, errors, base_offset=base_offset, replace_flag="--encoding-errors")


def _decoded_lines(path: Path, errors: EncodingErrors) -> Iterator[tuple[int, int, str]]:
    """``(line number, raw byte length, text)`` per line; a bad byte names ``file:line`` and its file offset."""
    offset = 0
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            yield lineno, len(raw), decode_utf8(raw, f"{path}:{lineno}", errors, base_offset=offset)
            offset += len(raw)


def read_txt(
    path: Path, errors: EncodingErrors = "strict", documents: TxtDocuments = "file"
) -> Iterator[Document]:
    """Documents of a ``.txt`` file: the whole file, or each blank-line-separated paragraph, or each line.

    ``paragraphs`` and ``lines`` stream the file line by line (memory holds one document); their ``where`` is
    ``file:line`` of the document's first line. Blank lines never make documents. A byte-order mark at the
    start of the file is not part of the text.
    """
    if documents not in TXT_DOCUMENTS:
        raise ScratchLLMError(f"txt_documents: expected one of {', '.join(TXT_DOCUMENTS)}, got {documents!r}")
    if documents == "file":
        data = path.read_bytes()
        yield Document(decode_utf8(data, str(path), errors).removeprefix("\ufeff"), str(path), len(data))
        return
    block: list[str] = []
    first = nbytes = 0
    # A blank line after the last one ends the last paragraph like any other.
    for lineno, size, line in chain(_decoded_lines(path, errors), [(0, 0, "")]):
        if lineno == 1:
            line = line.removeprefix("\ufeff")
        if line.strip():
            if not block:
                first = lineno
            block.append(line)
            nbytes += size
        if block and (documents == "lines" or not line.strip()):
            yield Document("".join(block).rstrip("\r\n"), f"{path}:{first}", nbytes)
            block, nbytes = [], 0


def read_jsonl(path: Path, text_field: str = "text", errors: EncodingErrors = "strict") -> Iterator[Document]:
    """Each non-blank line of a ``.jsonl`` file is a JSON object whose ``text_field`` holds one document."""
    for lineno, size, line in _decoded_lines(path, errors):
        where = f"{path}:{lineno}"
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ScratchLLMError(
                f"{where}: invalid JSON at column {exc.colno} ({exc.msg}); expected one JSON object per line"
            ) from None
        if not isinstance(record, dict):
            raise ScratchLLMError(
                f"{where}: expected a JSON object with a {text_field!r} field, got {type(record).__name__}"
            )
        if text_field not in record:
            keys = ", ".join(map(repr, list(record)[:8])) or "none"
            raise ScratchLLMError(
                f"{where}: missing text field {text_field!r} (fields: {keys}); choose one with --text-field"
            )
        text = record[text_field]
        if not isinstance(text, str):
            raise ScratchLLMError(
                f"{where}: field {text_field!r} must be a string, got {type(text).__name__}"
            )
        yield Document(text, where, size)


def read_parquet(path: Path, text_field: str = "text") -> Iterator[Document]:
    """Each row of a ``.parquet`` file is one document; the file is read in record batches, never whole."""
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is a dependency, but keep the message friendly
        raise ScratchLLMError(f"{path}: reading .parquet needs pyarrow (pip install pyarrow)") from None
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise ScratchLLMError(f"{path}: not a readable parquet file ({exc})") from None
    names = parquet.schema_arrow.names
    if text_field not in names:
        raise ScratchLLMError(
            f"{path}: missing text column {text_field!r} (columns: {', '.join(names)}); choose one with --text-field"
        )
    row = 0
    for batch in parquet.iter_batches(columns=[text_field], batch_size=1024):
        for value in batch.column(0).to_pylist():
            row += 1
            if value is None:
                continue
            if not isinstance(value, str):
                raise ScratchLLMError(
                    f"{path}: row {row}: column {text_field!r} must hold strings, got {type(value).__name__}"
                )
            yield Document(value, f"{path}: row {row}", len(value.encode("utf-8")))


def read_documents(
    path: Path,
    text_field: str = "text",
    encoding_errors: EncodingErrors = "strict",
    txt_documents: TxtDocuments = "file",
) -> Iterator[Document]:
    """Dispatch on the file suffix (``txt_documents`` says what a document is in a ``.txt`` file)."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ScratchLLMError(f"{path}: no such file")
    if suffix == ".txt":
        return read_txt(path, encoding_errors, txt_documents)
    if suffix == ".jsonl":
        return read_jsonl(path, text_field, encoding_errors)
    if suffix == ".parquet":
        return read_parquet(path, text_field)
    raise ScratchLLMError(
        f"{path}: unsupported file type {suffix or '(none)'!r}; expected one of {', '.join(SUPPORTED_SUFFIXES)}"
    )
