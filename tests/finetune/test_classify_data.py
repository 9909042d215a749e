"""Labelled data: formats, label checks, balancing, seeded split, padding collate, resumable batches."""

from __future__ import annotations

import json

import pytest
import torch

from scratchllm.data.batches import ExampleBatches
from scratchllm.data.classify import (
    ClassExample,
    LabelledText,
    balance,
    collate,
    label_names,
    read_labelled,
    split,
)
from scratchllm.errors import ScratchLLMError


def _records(n_spam: int, n_ham: int) -> list[LabelledText]:
    labels = ["spam"] * n_spam + ["ham"] * n_ham
    return [LabelledText(f"text {i}", label, f"f:{i + 1}") for i, label in enumerate(labels)]


def test_reads_tsv_without_header_csv_jsonl(tmp_path) -> None:
    (tmp_path / "sms").write_text('ham\tOk "lar"\nspam\tWIN, now\n\n', encoding="utf-8")
    got = read_labelled(tmp_path / "sms", format="tsv", header=False, text_column="1", label_column="0")
    assert [(r.text, r.label) for r in got] == [('Ok "lar"', "ham"), ("WIN, now", "spam")]
    (tmp_path / "d.csv").write_text('text,label\n"a, b",pos\nc,neg\n', encoding="utf-8")
    assert [(r.text, r.label) for r in read_labelled(tmp_path / "d.csv")] == [("a, b", "pos"), ("c", "neg")]
    rows = [{"sentence": "x", "y": 1}, {"sentence": "y", "y": 0}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    got = read_labelled(tmp_path / "d.jsonl", text_column="sentence", label_column="y")
    assert [(r.text, r.label, r.where) for r in got] == [("x", "1", f"{tmp_path}/d.jsonl:1"), ("y", "0", f"{tmp_path}/d.jsonl:2")]


def test_reads_parquet(tmp_path) -> None:
    from dev_deps import require

    pa, pq = require("pyarrow"), require("pyarrow.parquet")
    pq.write_table(pa.table({"text": ["a", "b"], "label": ["x", "y"]}), tmp_path / "d.parquet")
    assert [r.label for r in read_labelled(tmp_path / "d.parquet")] == ["x", "y"]


def test_bad_records_are_one_line_naming_record_and_field(tmp_path) -> None:
    (tmp_path / "d.jsonl").write_text('{"text": "a", "label": "x"}\n{"label": "y"}\n', encoding="utf-8")
    with pytest.raises(ScratchLLMError, match=r"d.jsonl:2: record 1 has no 'text' field"):
        read_labelled(tmp_path / "d.jsonl")
    (tmp_path / "n.jsonl").write_text('{"text": 5, "label": "x"}\n', encoding="utf-8")
    with pytest.raises(ScratchLLMError, match=r"record 0 field 'text' is int, expected text"):
        read_labelled(tmp_path / "n.jsonl")
    (tmp_path / "d.txt").write_text("a\tb\n", encoding="utf-8")
    with pytest.raises(ScratchLLMError, match="pass --format"):
        read_labelled(tmp_path / "d.txt")
    with pytest.raises(ScratchLLMError, match=r"f:2: record 1 has label 'ham', not one of --labels"):
        label_names(_records(1, 1), ["spam", "other"])


def test_labels_from_data_sorted_balance_and_split_are_seeded() -> None:
    records = _records(10, 40)
    assert label_names(records) == ["ham", "spam"]
    balanced = balance(records, seed=1)
    assert sum(r.label == "spam" for r in balanced) == sum(r.label == "ham" for r in balanced) == 10
    assert balance(records, seed=1) == balanced and balance(records, seed=2) != balanced
    train, val, test = split(balanced, seed=5)
    assert (len(train), len(val), len(test)) == (14, 2, 4)
    assert split(balanced, seed=5) == (train, val, test)
    assert sorted(r.where for r in train + val + test) == sorted(r.where for r in balanced)
    with pytest.raises(ScratchLLMError, match="distinct label"):
        label_names(_records(3, 0))


def test_collate_pads_right_and_batches_resume_exactly() -> None:
    ids, lengths, labels = collate([ClassExample([5, 6, 7], 1), ClassExample([8], 0)], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and lengths.tolist() == [3, 1] and labels.tolist() == [1, 0]
    examples = [ClassExample([i + 1], i % 2) for i in range(7)]
    run = ExampleBatches(examples, 3, collate, seed=4, drop_last=True)
    assert len(run) == 2
    seen = [run.next_batch()[0].flatten().tolist() for _ in range(3)]
    state = run.state_dict()
    rest = [run.next_batch()[0].flatten().tolist() for _ in range(3)]
    again = ExampleBatches(examples, 3, collate, seed=4, drop_last=True)
    again.load_state_dict(state)
    assert [again.next_batch()[0].flatten().tolist() for _ in range(3)] == rest
    assert all(len(b) == 3 for b in seen + rest)
    assert len(set(seen[0] + seen[1])) == 6  # one epoch: no example twice (the 7th is dropped)
    assert torch.equal(ExampleBatches(examples, 3, collate, shuffle=False).batches()[-1][0], torch.tensor([[7]]))


def test_two_processes_each_take_their_half_of_one_process_batches() -> None:
    examples = [ClassExample([i + 1], i % 2) for i in range(11)]
    one = ExampleBatches(examples, 4, collate, seed=3, drop_last=True)
    ranks = [ExampleBatches(examples, 2, collate, seed=3, drop_last=True, rank=r, world_size=2) for r in (0, 1)]
    assert len(one) == len(ranks[0]) == 2  # global batches of 4 per epoch (3 examples left over)
    for _ in range(5):  # across epoch boundaries
        whole = one.next_batch()[0].flatten().tolist()
        halves = [r.next_batch()[0].flatten().tolist() for r in ranks]
        assert halves[0] + halves[1] == whole and len(halves[0]) == len(halves[1]) == 2
    assert ranks[0].state_dict() == ranks[1].state_dict() == one.state_dict()  # one resumable position for all
    with pytest.raises(ScratchLLMError, match="need drop_last"):
        ExampleBatches(examples, 2, collate, rank=1, world_size=2)
    with pytest.raises(ScratchLLMError, match=r"fewer than one global batch \(2 x 8\)"):
        ExampleBatches(examples, 8, collate, drop_last=True, rank=1, world_size=2)
