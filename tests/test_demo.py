"""The README's main job, end to end at toy size: text -> tokenizer -> shards -> GPT -> generated text."""

from __future__ import annotations

import csv
from dataclasses import asdict
from pathlib import Path

from scratchllm.cli import main
from scratchllm.config import ModelSpec, TrainConfig
from scratchllm.recipes.demo import DEMO_MODEL, DEMO_TRAIN
from scratchllm.signature_cli import build_dataclass, load_yaml_mapping

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def test_demo_preset_yaml_matches_the_demo_defaults():
    """configs/demo-cpu.yaml documents the demo; it must say exactly what the code runs."""
    data = load_yaml_mapping(PROJECT_ROOT / "configs" / "demo-cpu.yaml")
    assert build_dataclass(ModelSpec, data["model"], "model") == DEMO_MODEL
    yaml_train = build_dataclass(TrainConfig, data["train"], "train")
    assert asdict(yaml_train) == asdict(DEMO_TRAIN)


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

    # The checkpoint generates on its own: `scratchllm generate` finds the run's tokenizer copy.
    capsys.readouterr()
    checkpoint = out / "pretrain" / "checkpoints" / "step-6"
    assert main(["generate", "--model", str(checkpoint), "--prompt", "I had", "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.startswith("I had")
