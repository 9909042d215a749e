"""Bad input to the finetuning commands: one line on stderr, exit code 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from finetune_models import tiny_checkpoint

from scratchllm.cli.parser import main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny")


def _refused(argv: list[str], capsys, out: Path, expected: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err  # progress lines may come first; the error is the last line, and one line
    assert err.endswith("\n") and "Traceback" not in err, err
    last = err.splitlines()[-1]
    assert last.startswith("scratchllm: error: ") and err.count("error") == 1, err
    assert expected in last, err
    assert not out.exists()  # nothing half-written


def _classify(ckpt: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["finetune", "classify", "--model", str(ckpt), "--data", str(data), "--out-dir", str(out),
            "--train.device", "cpu", *extra]  # fmt: skip


def _tsv(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "d.tsv"
    path.write_text("text\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


GOOD = ["good day\tpos", "bad night\tneg"] * 10


def test_record_missing_a_key(ckpt, tmp_path, capsys) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n', encoding="utf-8")
    _refused(_classify(ckpt, data, tmp_path / "run"), capsys, tmp_path / "run", "d.jsonl:2: record 1 has no 'label'")
    bad = tmp_path / "i.json"
    bad.write_text(json.dumps([{"instruction": "a", "output": "b"}, {"output": "c"}]), encoding="utf-8")
    argv = ["finetune", "instruct", "--model", str(ckpt), "--data", str(bad), "--out-dir", str(tmp_path / "run")]
    _refused(argv, capsys, tmp_path / "run", "record 1: missing key 'instruction'")


def test_label_outside_labels(ckpt, tmp_path, capsys) -> None:
    data = _tsv(tmp_path, GOOD + ["meh\tneutral"])
    argv = _classify(ckpt, data, tmp_path / "run", "--labels", "pos", "neg")
    _refused(argv, capsys, tmp_path / "run", "record 20 has label 'neutral', not one of --labels ['pos', 'neg']")


def test_empty_dataset_after_filtering(ckpt, tmp_path, capsys) -> None:
    data = _tsv(tmp_path, ["good day\tpos", "bad night\tneg"])  # balanced to 2 records: val and test are empty
    _refused(_classify(ckpt, data, tmp_path / "run", "--balance"), capsys, tmp_path / "run", "split is empty")


def test_text_column_that_is_not_text(ckpt, tmp_path, capsys) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": 12, "label": "x"}\n', encoding="utf-8")
    _refused(_classify(ckpt, data, tmp_path / "run"), capsys, tmp_path / "run", "field 'text' is int, expected text")


def test_model_whose_vocabulary_does_not_match_its_tokenizer(ckpt, tmp_path, capsys, gpt2_tokenizer_dir) -> None:
    argv = _classify(ckpt, _tsv(tmp_path, GOOD), tmp_path / "run", "--tokenizer", str(gpt2_tokenizer_dir))
    _refused(argv, capsys, tmp_path / "run", "do not belong together")


def test_lora_target_that_matches_no_layer(ckpt, tmp_path, capsys) -> None:
    argv = _classify(ckpt, _tsv(tmp_path, GOOD), tmp_path / "run", "--trains", "lora", "--lora.targets", "q_proj")
    _refused(argv, capsys, tmp_path / "run", "lora target 'q_proj' matches no linear layer")
