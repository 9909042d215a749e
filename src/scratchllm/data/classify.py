"""Labelled text for classification: read, check labels, balance, split, encode, pad.

A file holds one example per record with a text column and a label column (names configurable):

* ``.tsv`` / ``.csv`` (a header row by default; with ``header=False`` columns are numbered ``0, 1, ...``, as
  the SMS Spam Collection's ``label<TAB>text`` lines need); TSV lines are split at tabs only, no quoting;
* ``.jsonl``: one JSON object per line; ``.parquet``: one row per example (needs ``pyarrow``).

The label set comes from the data (sorted, so the class ids do not depend on the file order) or is given; a
label outside a given set is an error naming the record. :func:`balance` undersamples every class to the
smallest one's size and :func:`split` shuffles with a seed and cuts 70/10/20 (by default), both reproducible.
:func:`collate` pads each batch on the *right* to its longest example and records every length: under causal
attention a token never sees the positions after it, so right padding cannot change what the model computes
for the real tokens, and the classifier reads the last real one (:mod:`scratchllm.model.heads`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

from scratchllm.errors import ScratchLLMError
from scratchllm.utf8 import read_jsonl_objects, read_utf8

if TYPE_CHECKING:
    import torch

TableFormat = Literal["auto", "tsv", "csv", "jsonl", "parquet"]
Record = TypeVar("Record")
_SUFFIXES = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}


@dataclass(frozen=True)
class LabelledText:
    """One record: its text, its label (as written in the file) and where it came from (for messages)."""

    text: str
    label: str
    where: str


@dataclass(frozen=True)
class ClassExample:
    """An encoded record: token ids and class index."""

    ids: list[int]
    label: int


# ---------------------------------------------------------------------------------------------- reading
def table_format(path: Path, format: TableFormat = "auto") -> str:
    if format != "auto":
        return format
    if path.suffix.lower() not in _SUFFIXES:
        raise ScratchLLMError(
            f"{path}: cannot tell the format from the name; pass --format tsv, csv, jsonl or parquet"
        )
    return _SUFFIXES[path.suffix.lower()]


def _rows(path: Path, fmt: str, header: bool) -> list[tuple[str, dict[str, object]]]:
    """(where, record) for every record; delimited files without a header get columns "0", "1", ..."""
    if fmt == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ScratchLLMError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
        try:
            table = pq.read_table(path).to_pylist()
        except Exception as exc:  # pyarrow raises several types for bad files
            raise ScratchLLMError(f"{path}: cannot read parquet ({str(exc).splitlines()[0]})") from None
        return [(f"{path} row {i}", row) for i, row in enumerate(table)]
    if fmt == "jsonl":
        return [(f"{path}:{n}", record) for n, record in read_jsonl_objects(path)]
    text = read_utf8(path)
    if fmt == "tsv":
        lines = [line.split("\t") for line in text.splitlines()]
    else:
        lines = list(csv.reader(io.StringIO(text)))
    numbered = [(n, cells) for n, cells in enumerate(lines, 1) if any(c.strip() for c in cells)]
    if header:
        if not numbered:
            return []
        (_, names), numbered = numbered[0], numbered[1:]
    else:
        names = [str(i) for i in range(max((len(c) for _, c in numbered), default=0))]
    return [(f"{path}:{n}", dict(zip(names, cells))) for n, cells in numbered]


def read_labelled(
    path: str | Path,
    *,
    text_column: str = "text",
    label_column: str = "label",
    format: TableFormat = "auto",
    header: bool = True,
) -> list[LabelledText]:
    """Every record of ``path`` as :class:`LabelledText`; a missing column or a non-text cell names its record."""
    path = Path(path)
    if not path.is_file():
        raise ScratchLLMError(f"{path}: data file not found")
    records = []
    for i, (where, row) in enumerate(_rows(path, table_format(path, format), header)):
        for column in (text_column, label_column):
            if column not in row or row[column] is None:
                raise ScratchLLMError(f"{where}: record {i} has no {column!r} field (columns: {', '.join(row)})")
        text, label = row[text_column], row[label_column]
        if not isinstance(text, str):
            raise ScratchLLMError(f"{where}: record {i} field {text_column!r} is {type(text).__name__}, expected text")
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise ScratchLLMError(f"{where}: record {i} field {label_column!r} must be a string or integer label")
        records.append(LabelledText(text, str(label).strip(), where))
    return records


# ---------------------------------------------------------------------------------------------- labels
def label_names(records: Sequence[LabelledText], labels: Sequence[str] | None = None) -> list[str]:
    """The class names: ``labels`` when given (each record's label must be one), else the data's, sorted."""
    if labels:
        if len(set(labels)) != len(labels):
            raise ScratchLLMError(f"--labels: each label once, got {list(labels)}")
        allowed = set(labels)
        for i, record in enumerate(records):
            if record.label not in allowed:
                raise ScratchLLMError(
                    f"{record.where}: record {i} has label {record.label!r}, not one of --labels {list(labels)}"
                )
        return list(labels)
    found = sorted({r.label for r in records})
    if len(found) < 2:
        raise ScratchLLMError(f"the data has {len(found)} distinct label(s) {found}; a classifier needs at least 2")
    return found


def balance(records: Sequence[LabelledText], seed: int) -> list[LabelledText]:
    """Undersample: every class keeps a seeded random sample the size of the smallest class (file order kept)."""
    by_label: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        by_label.setdefault(record.label, []).append(i)
    import torch

    smallest = min(len(v) for v in by_label.values())
    generator = torch.Generator().manual_seed(seed)
    keep: list[int] = []
    for label in sorted(by_label):
        indices = by_label[label]
        chosen = torch.randperm(len(indices), generator=generator)[:smallest].tolist()
        keep.extend(indices[j] for j in chosen)
    return [records[i] for i in sorted(keep)]


def split(
    records: Sequence[Record], fractions: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 123
) -> tuple[list[Record], list[Record], list[Record]]:
    """Seeded shuffle, then train/val/test by ``fractions`` (train and val rounded down, the rest is test)."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ScratchLLMError(f"split: three fractions >= 0 summing to 1, got {list(fractions)}")
    import torch

    order = torch.randperm(len(records), generator=torch.Generator().manual_seed(seed)).tolist()
    shuffled = [records[i] for i in order]
    n_train = int(len(records) * fractions[0])
    n_val = int(len(records) * fractions[1])
    return shuffled[:n_train], shuffled[n_train : n_train + n_val], shuffled[n_train + n_val :]


# ---------------------------------------------------------------------------------------------- tensors
TEMPLATE_FIELD = "{text}"


def check_template(template: str | None) -> None:
    """A classification template must hold ``{text}`` exactly once (where each record's text goes)."""
    if template is not None and template.count(TEMPLATE_FIELD) != 1:
        raise ScratchLLMError(
            f"template {template!r}: expected {TEMPLATE_FIELD} exactly once, where each text goes"
        )


def encode(
    records: Sequence[LabelledText], tokenizer, labels: Sequence[str], max_length: int, template: str | None = None
) -> tuple[list[ClassExample], int]:
    """Token ids (cut to ``max_length``) and class index of each record, and how many were cut.

    With ``template`` each text is first put in its place (``{text}``): a question around the text, such as
    ``"Message: {text}\nIs this message spam?"``, lets the last token of an instruction-tuned model carry its
    own judgement to the class head.
    """
    check_template(template)
    index = {name: i for i, name in enumerate(labels)}
    examples, truncated = [], 0
    for record in records:
        text = record.text if template is None else template.replace(TEMPLATE_FIELD, record.text)
        ids = tokenizer.encode(text, disallowed_special=())
        if not ids:
            raise ScratchLLMError(f"{record.where}: empty text")
        if len(ids) > max_length:
            ids, truncated = ids[:max_length], truncated + 1
        examples.append(ClassExample(ids, index[record.label]))
    return examples, truncated


def collate(examples: Sequence[ClassExample], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(ids [B, T], lengths [B], labels [B])``, padded on the right to the longest example."""
    import torch

    longest = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), longest), pad_id, dtype=torch.long)
    for row, example in enumerate(examples):
        ids[row, : len(example.ids)] = torch.tensor(example.ids, dtype=torch.long)
    lengths = torch.tensor([len(e.ids) for e in examples], dtype=torch.long)
    labels = torch.tensor([e.label for e in examples], dtype=torch.long)
    return ids, lengths, labels
