"""Every shipped YAML preset loads against the `pretrain` command's signature, exactly as the CLI reads it."""

from __future__ import annotations

from pathlib import Path

import pytest

from scratchllm.cli import parse_command
from scratchllm.config import DataSpec, ModelSpec, TrainConfig
from scratchllm.errors import ScratchLLMError

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def kwargs_for(argv):
    return parse_command(argv)[1]


def test_presets_exist():
    names = {p.name for p in CONFIGS}
    assert {"tiny-cpu.yaml", "demo-cpu.yaml", "gpt2-small.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_preset_loads_against_pretrain_signature(path):
    kwargs = kwargs_for(["pretrain", "--config", str(path), "--data.dirs", "shards"])
    assert isinstance(kwargs["model"], ModelSpec)
    assert isinstance(kwargs["train"], TrainConfig)
    assert isinstance(kwargs["data"], DataSpec) and kwargs["data"].dirs == [Path("shards")]
    config = kwargs["model"].build(vocab_size=1000)
    assert config.vocab_size == 1000
    train = kwargs["train"]
    if train.global_batch_tokens is not None:  # the batch arithmetic must work for one process
        assert train.grad_accum_steps(config.context_length, 1) >= 1


def test_flags_override_yaml_and_typos_fail(tmp_path):
    tiny = next(p for p in CONFIGS if p.name == "tiny-cpu.yaml")
    kwargs = kwargs_for(
        [
            "pretrain",
            "--config",
            str(tiny),
            "--data.dirs",
            "a",
            "b",
            "--data.weights",
            "1",
            "3",
            "--train.lr",
            "3e-4",
        ]
    )
    assert kwargs["train"].lr == 3e-4
    assert kwargs["data"].weights == [1.0, 3.0]
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(ScratchLLMError, match="train.learning_rate"):
        kwargs_for(["pretrain", "--config", str(bad), "--data.dirs", "a"])
    bad.write_text("model:\n  preset: gpt5\n")
    with pytest.raises(ScratchLLMError, match="unknown preset 'gpt5'"):
        kwargs_for(["pretrain", "--config", str(bad), "--data.dirs", "a"])


def test_batch_arithmetic_names_the_problem():
    train = TrainConfig(micro_batch_size=4, global_batch_tokens=4 * 16 * 2 * 3)
    assert train.grad_accum_steps(16, world_size=2) == 3
    with pytest.raises(ScratchLLMError, match="global_batch_tokens: 384 is not a multiple"):
        train.grad_accum_steps(16, world_size=5)
