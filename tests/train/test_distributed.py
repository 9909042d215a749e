"""`torchrun -m scratchllm pretrain` with 2 CPU processes (gloo): same loss curve as 1 process, and resume.

The single-process run uses micro-batch 4; each of the 2 processes uses micro-batch 2 and reads its half of the
same global batch, so DDP (gradients averaged by all-reduce) and FSDP2 (sharded, reduce-scattered) must both
reproduce the single-process losses up to float reduction order.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scratchllm.cli import main
from scratchllm.train.checkpoint import latest_checkpoint


def losses(run: Path) -> dict[int, float]:
    with open(run / "metrics.csv", newline="") as fh:
        return {int(r["step"]): float(r["train_loss"]) for r in csv.DictReader(fh) if r["kind"] == "train"}


def torchrun(args: list[str]) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "scratchllm", "pretrain", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def base(shards, tiny_args):
    args = ["--data.dirs", str(shards), *tiny_args, "--train.max-steps", "4", "--train.save-every", "2"]
    return args + ["--train.eval-every", "2", "--train.sample-tokens", "0"]


@pytest.fixture(scope="module")
def single(tmp_path_factory, base):
    run = tmp_path_factory.mktemp("single") / "run"
    assert main(["pretrain", *base, "--out-dir", str(run)]) == 0
    return losses(run)


def test_ddp_matches_one_process_and_resumes(tmp_path, base, single):
    run = tmp_path / "ddp"
    two = [*base, "--train.micro-batch-size", "2", "--out-dir", str(run)]
    torchrun([*two, "--train.stop-at-step", "2"])
    assert latest_checkpoint(run / "checkpoints").name == "step-2"
    torchrun([*two, "--resume"])
    assert latest_checkpoint(run / "checkpoints").name == "step-4"
    got = losses(run)
    assert sorted(got) == [1, 2, 3, 4]
    assert got == pytest.approx(single, rel=1e-5)


def test_fsdp2_matches_one_process(tmp_path, base, single):
    run = tmp_path / "fsdp"
    torchrun([*base, "--train.micro-batch-size", "2", "--train.parallel", "fsdp", "--out-dir", str(run)])
    assert losses(run) == pytest.approx(single, rel=1e-5)
    assert latest_checkpoint(run / "checkpoints").name == "step-4"  # gathered to rank 0 and written whole


@pytest.mark.slow  # ~45 s on 2 cores: one more single-process run and one torchrun
def test_fsdp2_trains_a_llama_model_like_one_process(tmp_path, base):
    """Grouped-query attention, RoPE and SwiGLU shard like any other layers."""
    llama = [a if a != "tiny" else "llama-tiny" for a in base]
    assert main(["pretrain", *llama, "--out-dir", str(tmp_path / "one")]) == 0
    run = tmp_path / "fsdp"
    torchrun([*llama, "--train.micro-batch-size", "2", "--train.parallel", "fsdp", "--out-dir", str(run)])
    assert losses(run) == pytest.approx(losses(tmp_path / "one"), rel=1e-5)
