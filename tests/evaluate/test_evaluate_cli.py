"""``scratchllm evaluate ...`` end to end on a tiny saved model with the real GPT-2 tokenizer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import scratchllm.evaluate.choice as choice_module
from scratchllm.cli import main
from scratchllm.config import ModelConfig
from scratchllm.model import GPTModel
from scratchllm.tokenizer import load as load_tokenizer
from scratchllm.weights import save_model

SUBJECTS = ("agronomy", "anatomy")


@pytest.fixture
def checkpoint(tmp_path: Path, gpt2_tokenizer_dir: Path) -> Path:
    torch.manual_seed(0)
    model = GPTModel(ModelConfig(vocab_size=50257, context_length=1024, emb_dim=16, n_heads=2, n_layers=1))
    folder = save_model(model.eval(), tmp_path / "ckpt")
    load_tokenizer(gpt2_tokenizer_dir).save(folder / "tokenizer")
    return folder


@pytest.fixture
def cmmlu_copy(tmp_path: Path, shared_data: Path) -> Path:
    """Two subjects, five test questions each (the dev files whole)."""
    for split in ("test", "dev"):
        (tmp_path / "cmmlu" / split).mkdir(parents=True)
        for subject in SUBJECTS:
            lines = (shared_data / "cmmlu" / split / f"{subject}.csv").read_text(encoding="utf-8").splitlines()
            (tmp_path / "cmmlu" / split / f"{subject}.csv").write_text("\n".join(lines[:6]) + "\n", encoding="utf-8")
    return tmp_path / "cmmlu"


def test_choice_writes_results_and_resumes(checkpoint, cmmlu_copy, tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "results.json"
    argv = ["evaluate", "choice", "--model", str(checkpoint), "--task", "cmmlu", "--data", str(cmmlu_copy),
            "--shots", "1", "--batch-size", "2", "--device", "cpu", "--output", str(out)]
    real = choice_module.evaluate_subject
    calls = []

    def stop_at_second(model, tokenizer, subject, *args):
        calls.append(subject.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(model, tokenizer, subject, *args)

    monkeypatch.setattr(choice_module, "evaluate_subject", stop_at_second)
    assert main(argv) == 130  # stopped during the second subject
    assert not out.exists()
    assert [p.name for p in (tmp_path / "results.json.parts").iterdir()] == ["agronomy.json"]

    calls.clear()
    monkeypatch.setattr(choice_module, "evaluate_subject", lambda *a: calls.append(a[2].name) or real(*a))
    assert main(argv) == 0
    assert calls == ["anatomy"]  # agronomy came from its saved part
    assert not (tmp_path / "results.json.parts").exists()
    results = json.loads(out.read_text(encoding="utf-8"))
    assert [s["subject"] for s in results["subjects"]] == list(SUBJECTS)
    assert results["overall"]["questions"] == 10 and results["shots"] == 1 and results["task"] == "cmmlu"
    assert results["scratchllm_version"] and results["model"] == str(checkpoint)
    acc = sum(s["acc"] * s["questions"] for s in results["subjects"]) / 10
    assert math.isclose(results["overall"]["acc"], acc)
    table = capsys.readouterr().out
    assert "agronomy" in table and "overall" in table and "acc_norm" in table

    # a different setting must not silently reuse saved parts
    (tmp_path / "results.json.parts").mkdir()
    (tmp_path / "results.json.parts" / "agronomy.json").write_text(
        json.dumps({"settings": {"shots": 5}, "result": {}}), encoding="utf-8"
    )
    assert main(argv) == 2
    assert "saved by a run with other settings" in capsys.readouterr().err


def test_perplexity_command(checkpoint, tmp_path, capsys) -> None:
    text = tmp_path / "text.txt"
    text.write_text("Hello world. " * 40, encoding="utf-8")
    out = tmp_path / "ppl.json"
    argv = ["evaluate", "perplexity", "--model", str(checkpoint), "--input", str(text), "--window", "64",
            "--stride", "32", "--device", "cpu", "--output", str(out)]
    assert main(argv) == 0
    results = json.loads(out.read_text(encoding="utf-8"))
    overall = results["overall"]
    assert overall["tokens"] == len(load_tokenizer(checkpoint / "tokenizer").encode(text.read_text()))
    assert overall["bytes"] == len("Hello world. " * 40)
    assert math.isclose(overall["perplexity"], math.exp(overall["loss"]))
    assert results["window"] == 64 and results["stride"] == 32
    assert "bits/byte" in capsys.readouterr().out


def test_bad_input_is_one_line(checkpoint, tmp_path, capsys) -> None:
    bad = tmp_path / "bad" / "test"
    bad.mkdir(parents=True)
    (bad / "x.csv").write_text("Question,A,B,C,D,Answer\nq,1,2,3,4,E\n", encoding="utf-8")
    argv = ["evaluate", "choice", "--model", str(checkpoint), "--task", "cmmlu", "--data", str(bad.parent)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"scratchllm: error: {bad / 'x.csv'}: row 2: Answer 'E' is not one of A, B, C, D"
