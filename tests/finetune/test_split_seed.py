"""--split-seed: every finetuning recipe splits its data with it, else with --train.seed, so that training seeds
can be compared on one split (the split and the training order otherwise change together)."""

from __future__ import annotations

import pytest

from scratchllm.cli.parser import main
from scratchllm.recipes import finetune


class Stop(Exception):
    """Raised by the spy: the test needs the split's seed, not the run."""


@pytest.mark.parametrize("command", ["classify", "instruct", "dpo"])
@pytest.mark.parametrize(("extra", "expected"), [((), 7), (("--split-seed", "3"), 3)])
def test_the_split_uses_split_seed_else_the_training_seed(command, extra, expected, monkeypatch, tmp_path) -> None:
    seeds = []

    def spy(*args, seed: int, **kwargs):
        seeds.append(seed)
        raise Stop

    monkeypatch.setattr(finetune, "split_data", spy)
    args = ["finetune", command, "--model", "m.gguf", "--data", "d.json", "--out-dir", str(tmp_path / "run")]
    with pytest.raises(Stop):
        main([*args, "--train.seed", "7", "--train.device", "cpu", "--train.precision", "fp32", *extra])
    assert seeds == [expected]
    assert not (tmp_path / "run").exists()
