"""`torchrun -m scratchllm finetune classify|instruct` with 2 CPU processes (gloo) trains as one process does.

One process uses micro-batch 4; each of two uses micro-batch 2 and takes its half of the same global batch, and
the losses are means over examples, so DDP (gradients averaged by all-reduce) and FSDP2 (sharded, gradients
reduce-scattered) must reproduce the single-process losses up to float reduction order, and save the same kind
of run: a classifier that ``scratchllm classify`` loads, an adapter that ``generate`` loads. DPO trains under
DDP only and refuses FSDP2 before anything is written.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from finetune_models import tiny_checkpoint
from test_classify_recipe import _args, _write_data

from scratchllm.cli.parser import main


def _losses(run: Path) -> dict[int, float]:
    with open(run / "metrics.csv", newline="") as fh:
        return {int(r["step"]): float(r["train_loss"]) for r in csv.DictReader(fh) if r["kind"] == "train"}


def _torchrun(argv: list[str]) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "scratchllm"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*cmd, *argv], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def _halved(argv: list[str]) -> list[str]:
    argv = list(argv)
    argv[argv.index("--train.micro-batch-size") + 1] = "2"
    return argv


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_distributed_classification_matches_one_process(parallel: str, tmp_path, capsys) -> None:
    ckpt = tiny_checkpoint(tmp_path / "tiny")
    data = _write_data(tmp_path / "d.tsv")
    common = ("--epochs", "2", "--trains", "all", "--train.log-every", "1", "--train.seed", "5")
    single = tmp_path / "one"
    assert main(_args(ckpt, data, single, *common)) == 0
    summary = json.loads(capsys.readouterr().out)
    two = tmp_path / "two"
    _torchrun(_halved(_args(ckpt, data, two, *common, "--train.parallel", parallel)))
    expected = _losses(single)
    assert len(expected) == summary["step"] == 2 * (42 // 4)  # 60 examples split 70/10/20 % -> 42 to train on
    assert _losses(two) == pytest.approx(expected, rel=1e-5)
    one_report = json.loads((single / "metrics.json").read_text())
    report = json.loads((two / "metrics.json").read_text())
    assert report["best_epoch"]["epoch"] == one_report["best_epoch"]["epoch"]
    for split in ("train", "val", "test"):  # measured on the best epoch's weights, gathered whole after FSDP2
        assert report["splits"][split]["accuracy"] == one_report["splits"][split]["accuracy"]
    from scratchllm.recipes.classify import load_classifier

    one_clf, _, _ = load_classifier(single)
    two_clf, _, _ = load_classifier(two)
    for (name, a), b in zip(one_clf.state_dict().items(), two_clf.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)  # the saved weights are whole
    assert main(["classify", "--model", str(two), "great fine"]) == 0  # the saved run loads and predicts
    assert capsys.readouterr().out.strip()


def test_distributed_lora_instruction_tuning_matches_one_process(tmp_path, capsys) -> None:
    """The instruction loss counts response tokens, which differ from batch to batch: the trainer weighs each
    process's part by its share of the step's tokens, so DDP and FSDP2 give one process's losses."""
    from test_instruct_recipe import WORDS
    from test_instruct_recipe import _args as instruct_args

    from scratchllm.data.instruct import alpaca_prompt
    from scratchllm.weights import load

    text = " ".join([alpaca_prompt("Repeat.", "good") + "good"] * 10 + WORDS * 10)
    ckpt = tiny_checkpoint(tmp_path / "tiny", text=text, context_length=96)
    rows = [{"instruction": "Repeat.", "input": WORDS[i % 10], "output": " ".join(WORDS[i % 10 : i % 10 + 1 + i % 4])}
            for i in range(40)]  # responses of 1 to 4 words: each batch scores its own number of tokens
    data = tmp_path / "d.json"
    data.write_text(json.dumps(rows), encoding="utf-8")
    common = ("--epochs", "2", "--trains", "lora", "--lora.rank", "4", "--train.log-every", "1", "--train.seed", "3",
              "--test-responses", "false")  # fmt: skip
    assert main(instruct_args(ckpt, data, tmp_path / "one", *common)) == 0
    for parallel in ("ddp", "fsdp"):
        _torchrun(_halved(instruct_args(ckpt, data, tmp_path / parallel, *common, "--train.parallel", parallel)))
    expected = _losses(tmp_path / "one")
    assert len(expected) == 16
    one = load(tmp_path / "one" / "adapter").model  # base + adapter, merged on load
    for parallel in ("ddp", "fsdp"):
        assert _losses(tmp_path / parallel) == pytest.approx(expected, rel=1e-5), parallel
        two = load(tmp_path / parallel / "adapter").model
        for (name, x), y in zip(one.state_dict().items(), two.state_dict().values()):
            torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-5, msg=name)


def test_fsdp_is_refused_by_dpo_before_anything_is_written(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["finetune", "dpo", "--model", str(tmp_path / "absent"), "--data", str(tmp_path / "absent.jsonl"),
            "--out-dir", str(out), "--train.parallel", "fsdp"]  # fmt: skip
    assert main(argv) == 2
    assert "this recipe runs under DDP only" in capsys.readouterr().err
    assert not out.exists()
