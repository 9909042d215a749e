"""`torchrun -m scratchllm finetune classify` with 2 CPU processes (gloo) trains as one process does.

One process uses micro-batch 4; each of two uses micro-batch 2 and takes its half of the same global batch, and
the classification loss is a mean over examples, so DDP (gradients averaged by all-reduce) must reproduce the
single-process losses up to float reduction order, and save the same kind of run: a classifier that
``scratchllm classify`` loads. FSDP2 is refused by the finetuning recipes, before anything is written.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from finetune_models import tiny_checkpoint
from test_classify_recipe import _args, _write_data

from scratchllm.cli.parser import main


def _losses(run: Path) -> dict[int, float]:
    with open(run / "metrics.csv", newline="") as fh:
        return {int(r["step"]): float(r["train_loss"]) for r in csv.DictReader(fh) if r["kind"] == "train"}


def test_ddp_classification_matches_one_process(tmp_path, capsys) -> None:
    ckpt = tiny_checkpoint(tmp_path / "tiny")
    data = _write_data(tmp_path / "d.tsv")
    common = ("--epochs", "2", "--trains", "all", "--train.log-every", "1", "--train.seed", "5")
    single = tmp_path / "one"
    assert main(_args(ckpt, data, single, *common)) == 0
    summary = json.loads(capsys.readouterr().out)
    two = tmp_path / "two"
    argv = _args(ckpt, data, two, *common)
    argv[argv.index("--train.micro-batch-size") + 1] = "2"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "scratchllm"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*cmd, *argv], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = _losses(single)
    assert len(expected) == summary["step"] == 2 * (42 // 4)  # 60 examples split 70/10/20 % -> 42 to train on
    assert _losses(two) == pytest.approx(expected, rel=1e-5)
    report = json.loads((two / "metrics.json").read_text())
    assert report["splits"]["test"]["accuracy"] == json.loads((single / "metrics.json").read_text())["splits"]["test"]["accuracy"]
    assert main(["classify", "--model", str(two), "great fine"]) == 0  # the saved run loads and predicts
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("recipe", ["classify", "instruct", "dpo"])
def test_fsdp_is_refused_by_finetuning_before_anything_is_written(recipe: str, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["finetune", recipe, "--model", str(tmp_path / "absent"), "--data", str(tmp_path / "absent.jsonl"),
            "--out-dir", str(out), "--train.parallel", "fsdp"]  # fmt: skip
    assert main(argv) == 2
    assert "finetuning recipes run under DDP only" in capsys.readouterr().err
    assert not out.exists()
