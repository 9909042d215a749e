"""`scratchllm pretrain` end to end on real prepared shards: outputs, resume, crash safety, NaN, time budget."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from scratchllm.cli import main
from scratchllm.train.checkpoint import MARKER, latest_checkpoint

PROJECT = Path(__file__).resolve().parents[2]


def train_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["kind"] == "train"]


def losses(run: Path) -> dict[int, float]:
    return {int(r["step"]): float(r["train_loss"]) for r in train_rows(run)}


def test_pretrain_command_writes_a_complete_run(tmp_path, shards, tiny_args, capsys):
    from scratchllm import weights
    from scratchllm.generation import generate_text
    from scratchllm.tokenizer import load

    run = tmp_path / "run"
    argv = ["pretrain", "--data.dirs", str(shards), "--out-dir", str(run), *tiny_args]
    code = main([*argv, "--train.max-steps", "6", "--train.eval-every", "3", "--train.save-every", "3"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["step"] == 6 and summary["tokens_seen"] == 6 * 4 * 16
    assert summary["val_loss"] is not None and summary["val_perplexity"] > 1
    assert "step 6/6 | loss" in captured.err and "MFU" in captured.err and "sample: 'The' ->" in captured.err

    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["step"]) for r in rows if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert [int(r["step"]) for r in rows if r["kind"] == "eval"] == [3, 6]
    assert (run / "loss.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads((run / "run.json").read_text())["model"]["vocab_size"] == 300  # from the tokenizer

    ckpt = latest_checkpoint(run / "checkpoints")
    assert ckpt.name == "step-6" and (ckpt / MARKER).is_file()
    state = json.loads((ckpt / "trainer.json").read_text())
    assert state["state"]["step"] == 6 and state["run"]["train"]["max_steps"] == 6
    # A checkpoint generates on its own: weights from the folder, tokenizer from the run's copy.
    model = weights.load_model(ckpt)
    tok = load(ckpt / state["tokenizer"])
    assert isinstance(generate_text(model, tok, "The", max_new_tokens=3), str)

    # The folder holds a finished run: starting again without --resume is refused, with --resume it is a no-op.
    assert main(argv + ["--train.max-steps", "6"]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(argv + ["--train.max-steps", "6", "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().err
    assert len(train_rows(run)) == 6

    # A longer schedule on resume is refused (the run would disagree with itself) unless asked for explicitly.
    assert main(argv + ["--train.max-steps", "8", "--resume"]) == 2
    assert "max_steps 6 -> 8" in capsys.readouterr().err
    assert main(argv + ["--train.max-steps", "8", "--resume", "--train.reschedule"]) == 0
    assert "reschedule: from step 6 on the new settings apply (max_steps 6 -> 8)" in capsys.readouterr().err
    assert len(train_rows(run)) == 8


def test_nonfinite_loss_stops_with_the_step_and_no_nan_checkpoint(tmp_path, shards, tiny_args, capsys):
    run = tmp_path / "run"
    argv = [
        "pretrain",
        "--data.dirs",
        str(shards),
        "--out-dir",
        str(run),
        *tiny_args,
        "--train.max-steps",
        "20",
    ]
    # An absurd learning rate blows the weights up: the loss goes to inf/NaN within a few steps.
    argv += [
        "--train.lr",
        "1e30",
        "--train.min-lr",
        "0",
        "--train.warmup-steps",
        "0",
        "--train.save-every",
        "1",
    ]
    argv += ["--train.eval-every", "0", "--train.grad-clip", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "scratchllm: error: step" in err and "non-finite" in err and "Traceback" not in err
    failed_step = int(err.split("scratchllm: error: step ")[1].split(":")[0])
    ckpts = sorted((run / "checkpoints").glob("step-*"))
    assert ckpts and all(int(p.name.split("-")[1]) < failed_step for p in ckpts)
    for path in ckpts:
        for name, tensor in load_file(str(path / "model.safetensors")).items():
            assert torch.isfinite(tensor).all(), (path.name, name)


def test_time_budget_stops_cleanly_with_a_checkpoint(tmp_path, shards, tiny_args, capsys):
    run = tmp_path / "run"
    argv = ["pretrain", "--data.dirs", str(shards), "--out-dir", str(run), *tiny_args]
    argv += ["--train.max-steps", "100000", "--train.max-minutes", "0.03", "--train.eval-every", "0"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["stop_reason"] == "time_budget" and 0 < summary["step"] < 100000
    assert latest_checkpoint(run / "checkpoints").name == f"step-{summary['step']}"
    assert summary["val_loss"] is not None  # the final evaluation still ran


# The command line, with the checkpoint writer patched to stall half-way through step 4 (after the weights).
PAUSE_IN_SAVE_OF_STEP_4 = """
import sys, time
from scratchllm.train import checkpoint
write_json = checkpoint._write_json
def stalling_write_json(path, data):
    if ".tmp-step-4-" in str(path):
        time.sleep(120)
    write_json(path, data)
checkpoint._write_json = stalling_write_json
from scratchllm.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_during_save_keeps_the_previous_checkpoint_and_resume_continues(tmp_path, shards, tiny_args):
    base = ["pretrain", "--data.dirs", str(shards), *tiny_args]
    base += [
        "--train.max-steps",
        "6",
        "--train.save-every",
        "2",
        "--train.eval-every",
        "0",
        "--model.drop-rate",
        "0.1",
    ]
    straight = tmp_path / "straight"
    assert main([*base, "--out-dir", str(straight)]) == 0

    run = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSE_IN_SAVE_OF_STEP_4, *base, "--out-dir", str(run)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        partial = []
        while time.monotonic() < deadline and proc.poll() is None:
            partial = list((run / "checkpoints").glob(".tmp-step-4-*/model.safetensors"))
            if partial:
                break
            time.sleep(0.1)
        assert partial, "the run never reached the paused save of step 4"
        os.kill(proc.pid, signal.SIGKILL)  # dies half-way through writing step-4
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    ckpt_dir = run / "checkpoints"
    assert latest_checkpoint(ckpt_dir).name == "step-2"
    assert not (ckpt_dir / "step-4").exists()

    assert main([*base, "--out-dir", str(run), "--resume"]) == 0
    assert latest_checkpoint(ckpt_dir).name == "step-6"
    assert not list(ckpt_dir.glob(".tmp-*"))  # the crash's leftovers were cleaned up
    assert losses(run) == losses(straight)  # same curve as the uninterrupted run (dropout on)


def test_pretrain_on_a_weighted_mixture_of_two_folders(tmp_path, shards, shared_data, tiny_args, capsys):
    from scratchllm.data.prepare import prepare

    verdict = tmp_path / "verdict"
    tokenizer = shards.parent / "tokenizer"
    prepare([shared_data / "rasbt" / "the-verdict.txt"], tokenizer, verdict, val_fraction=0.1, progress=False)
    run = tmp_path / "run"
    argv = ["pretrain", "--data.dirs", str(shards), str(verdict), "--data.weights", "3", "1", *tiny_args]
    assert main([*argv, "--out-dir", str(run), "--train.max-steps", "3", "--train.eval-every", "0"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 3 and summary["val_loss"] is not None
    assert json.loads((run / "run.json").read_text())["data"]["weights"] == [3.0, 1.0]


def test_a_prepared_folder_moved_elsewhere_still_trains(tmp_path, shared_data, tiny_args, capsys):
    """meta.json names the tokenizer copy inside the folder, so moving the folder (or copying it to another
    machine, without the tokenizer it was prepared with) keeps it usable."""
    import shutil

    from scratchllm.data.prepare import prepare
    from scratchllm.tokenizer import train_bpe

    text = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:20_000]
    (tmp_path / "corpus.txt").write_text(text, encoding="utf-8")
    train_bpe(text, 300).save(tmp_path / "bpe")
    here = tmp_path / "here" / "data"
    prepare([tmp_path / "corpus.txt"], tmp_path / "bpe", here, val_fraction=0.1, progress=False)
    moved = tmp_path / "elsewhere" / "data"
    shutil.move(tmp_path / "here", tmp_path / "elsewhere")
    shutil.rmtree(tmp_path / "bpe")  # the tokenizer it was prepared with is gone
    assert json.loads((moved / "meta.json").read_text())["tokenizer"]["path"] == "tokenizer"

    run = tmp_path / "run"
    argv = ["pretrain", "--data.dirs", str(moved), "--out-dir", str(run), *tiny_args]
    assert main([*argv, "--train.max-steps", "2", "--train.eval-every", "0"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 2 and summary["sample"]  # the sample was decoded with the folder's tokenizer
    assert (run / "tokenizer" / "scratchllm_tokenizer.json").is_file()
