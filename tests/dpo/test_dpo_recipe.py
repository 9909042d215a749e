"""The DPO recipe end to end on a tiny model: trains, reports, resumes exactly, LoRA and a precomputed reference."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from finetune.finetune_models import tiny_checkpoint, tiny_model
from scratchllm.cli.parser import main

GOOD = ["good", "happy", "great", "fine", "day"]
BAD = ["bad", "awful", "sad", "poor", "night"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    from scratchllm.data.instruct import alpaca_prompt

    text = " ".join([alpaca_prompt("Say something.", "") + "good"] * 10 + (GOOD + BAD) * 10)
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny", text=text, context_length=96)


def _data(path: Path, n: int = 40) -> Path:
    rows = [{"instruction": "Say something.", "input": BAD[i % 5], "chosen": GOOD[i % 5], "rejected": BAD[(i + 1) % 5]}
            for i in range(n)]  # fmt: skip
    rows.append({"instruction": "Say something.", "chosen": "fine", "rejected": "fine"})  # skipped, counted
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def _args(ckpt: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "finetune", "dpo", "--model", str(ckpt), "--data", str(data), "--out-dir", str(out), "--beta", "0.5",
        "--train.precision", "fp32", "--train.device", "cpu", "--train.micro-batch-size", "4",
        "--train.lr", "3e-3", "--train.min-lr", "3e-3", "--train.eval-batches", "2", "--max-new-tokens", "3",
        "--examples", "2", *extra,
    ]  # fmt: skip


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "dpo_metrics.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_finetune_dpo_raises_the_validation_margin(ckpt, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(_args(ckpt, _data(tmp_path / "d.json"), out, "--epochs", "3", "--train.eval-every", "12")) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert "1 pair(s) with identical answers skipped" in captured.err
    assert "reference: a frozen copy of the starting model" in captured.err
    rows = _rows(out)
    start = [r for r in rows if r["step"] == "0"]
    assert {r["split"] for r in start} == {"train", "val"}
    for row in start:  # policy == reference: loss ln 2, rewards 0
        assert float(row["loss"]) == pytest.approx(math.log(2), abs=1e-6) and float(row["margin"]) == 0.0
    last_val = [r for r in rows if r["split"] == "val"][-1]
    assert int(last_val["step"]) == summary["step"] == 3 * 8  # 34 train pairs / 4 = 8 steps per epoch
    assert float(last_val["margin"]) > 0.5 and float(last_val["accuracy"]) == 1.0
    assert summary["val_accuracy"] == 1.0 and summary["test_margin"] > 0.5
    assert (out / "margins.png").stat().st_size > 0 and (out / "loss.png").is_file()
    assert "val_perplexity" not in captured.err  # exp(DPO loss) is no perplexity
    with open(out / "metrics.csv", newline="", encoding="utf-8") as fh:
        assert not any(row.get("val_perplexity") for row in csv.DictReader(fh))
    responses = json.loads((out / "responses.json").read_text())
    assert len(responses) == 2 and set(responses[0]) == {"prompt", "chosen", "rejected", "before", "after"}
    assert summary["model"] == str(out / "model")
    assert main(["generate", "--model", str(out / "model"), "--prompt", "good", "--max-new-tokens", "2"]) == 0


def test_resume_is_exact(ckpt, tmp_path, capsys) -> None:
    data = _data(tmp_path / "d.json", 24)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    common = ("--epochs", "2", "--examples", "0", "--train.eval-every", "5", "--train.save-every", "5")
    assert main(_args(ckpt, data, whole, *common)) == 0
    assert main(_args(ckpt, data, parts, *common, "--train.stop-at-step", "5")) == 0
    assert main(_args(ckpt, data, parts, *common, "--resume")) == 0
    capsys.readouterr()
    a, b = _rows(whole), _rows(parts)
    assert [r["step"] for r in a] == [r["step"] for r in b] == ["0", "0", "5", "5", "10", "10"]
    for x, y in zip(a, b):
        for key in ("loss", "margin", "accuracy"):
            assert float(x[key]) == pytest.approx(float(y[key]), abs=1e-6), (x, y)


def test_lora_with_precomputed_reference(ckpt, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    extra = ("--epochs", "2", "--trains", "lora", "--lora.rank", "4", "--precompute-reference", "true",
             "--label-smoothing", "0.1", "--average-logprobs", "true", "--examples", "0")  # fmt: skip
    assert main(_args(ckpt, _data(tmp_path / "d.json", 24), out, *extra)) == 0
    captured = capsys.readouterr()
    assert "adapters switched off" in captured.err and "precomputed for every pair" in captured.err
    lora_params = 2 * 4 * (2 * 32 + 32) + 2 * 4 * (32 + 32) + 2 * 4 * (32 + 96) + 2 * 4 * (48 + 32)  # qkv, out, fc, proj
    assert f"trainable parameters: {lora_params:,} of" in captured.err  # only the adapters: the reference stays put
    start = [r for r in _rows(out) if r["step"] == "0"]
    assert all(abs(float(r["margin"])) < 1e-5 for r in start)
    assert json.loads(captured.out)["val_margin"] > 0 and (out / "adapter" / "adapter.safetensors").is_file()


def test_missing_answer_is_one_line(ckpt, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "chosen": "b", "rejected": "c"}\n{"instruction": "a", "chosen": "b"}\n')
    assert main(_args(ckpt, bad, tmp_path / "run")) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("bad.jsonl:2 record 1: missing key 'rejected' (a preference record needs chosen and rejected)")
    assert err.count("\n") == 0 and not (tmp_path / "run").exists()  # one line, nothing written


def test_a_token_budget_is_refused(ckpt, tmp_path, capsys) -> None:
    assert main(_args(ckpt, _data(tmp_path / "d.json", 8), tmp_path / "run", "--train.global-batch-tokens", "4096")) == 2
    assert "does not apply (a batch is a number of preference pairs)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_given_reference_model(ckpt, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    extra = ("--reference", str(ckpt), "--epochs", "1", "--examples", "0", "--train.eval-every", "0")
    assert main(_args(ckpt, _data(tmp_path / "d.json", 24), out, *extra)) == 0
    assert f"reference: {ckpt} (frozen)" in capsys.readouterr().err
    start = [r for r in _rows(out) if r["step"] == "0"]
    assert [float(r["loss"]) for r in start] == pytest.approx([math.log(2)] * 2, abs=1e-6)
    import shutil

    from scratchllm.weights import save_model

    other = tmp_path / "other"
    save_model(tiny_model(vocab_size=400, context_length=96), other)
    shutil.copytree(ckpt / "tokenizer", other / "tokenizer")
    assert main(_args(ckpt, _data(tmp_path / "d.json", 24), tmp_path / "run2", "--reference", str(other))) == 2
    assert "the reference's vocabulary (400) differs from the model's" in capsys.readouterr().err
