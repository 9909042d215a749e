"""The README's main job, end to end at toy size: text -> tokenizer -> shards -> GPT -> generated text."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from scratchllm.cli import main, parse_command
from scratchllm.errors import ScratchLLMError
from scratchllm.recipes.demo import DEMO_MODEL, DEMO_TRAIN, with_time_budget

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def test_demo_preset_yaml_matches_the_demo_defaults():
    """configs/demo-cpu.yaml documents the demo; it must say exactly what the code runs."""
    _, kwargs = parse_command(["demo", "--config", str(PROJECT_ROOT / "configs" / "demo-cpu.yaml")])
    assert kwargs["model"] == DEMO_MODEL
    assert asdict(kwargs["train"]) == asdict(DEMO_TRAIN)


def test_minutes_and_train_max_minutes_never_disagree_silently(capsys):
    said = []
    shorter = with_time_budget(DEMO_TRAIN, 2.5, log=said.append)
    assert shorter.max_minutes == 2.5 and said == ["demo: --minutes 2.5 sets train.max_minutes (was 10)"]
    assert with_time_budget(DEMO_TRAIN, None) is DEMO_TRAIN
    with pytest.raises(ScratchLLMError, match="--minutes 5 and --train.max-minutes 3 disagree"):
        with_time_budget(replace(DEMO_TRAIN, max_minutes=3), 5)
    # through the command line: refused before any work starts
    assert main(["demo", "--minutes", "5", "--train.max-minutes", "3"]) == 2
    assert "disagree; give only one" in capsys.readouterr().err


def test_demo_runs_the_whole_pipeline(tmp_path, shared_data, capsys):
    out = tmp_path / "demo"
    code = main(
        [
            "demo",
            "--input", str(shared_data / "rasbt" / "the-verdict.txt"),
            "--out-dir", str(out),
            "--vocab-size", "320",
            "--prompts", "I had", "She",
            "--max-new-tokens", "8",
            "--workers", "1",
            "--model.context-length", "32",
            "--model.emb-dim", "32",
            "--model.n-heads", "2",
            "--model.n-layers", "1",
            "--train.micro-batch-size", "4",
            "--train.max-steps", "6",
            "--train.warmup-steps", "1",
            "--train.eval-every", "3",
            "--train.eval-batches", "1",
            "--train.save-every", "3",
            "--train.sample-tokens", "4",
            "--train.log-every", "1",
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert ">>> I had" in printed and ">>> She" in printed
    assert (out / "tokenizer").is_dir() and (out / "data" / "meta.json").is_file()
    assert (out / "pretrain" / "loss.png").stat().st_size > 0
    with (out / "pretrain" / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    steps = [int(r["step"]) for r in rows if r["kind"] == "train"]
    assert max(steps) == 6
    assert any(r["val_loss"] for r in rows)
    assert list((out / "pretrain" / "checkpoints").glob("step-6"))
    run_info = json.loads((out / "pretrain" / "run.json").read_text(encoding="utf-8"))  # written atomically
    assert run_info["train"]["max_steps"] == 6 and not list((out / "pretrain").glob(".run.json.tmp*"))

    # The checkpoint generates on its own: `scratchllm generate` finds the run's tokenizer copy.
    capsys.readouterr()
    checkpoint = out / "pretrain" / "checkpoints" / "step-6"
    assert main(["generate", "--model", str(checkpoint), "--prompt", "I had", "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.startswith("I had")
