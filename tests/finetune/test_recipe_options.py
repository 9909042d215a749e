"""Options the finetuning recipes share, checked on each recipe from the command line.

--split-seed: every recipe splits its data with it, else with --train.seed, so that training seeds can be compared
on one split (the split and the training order otherwise change together). --dropout: a bad rate is refused
before the data and the model are read."""

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


@pytest.mark.parametrize("command", ["classify", "instruct"])
@pytest.mark.parametrize("rate", ["1.5", "-0.1"])
def test_a_bad_dropout_is_refused_before_the_data_and_the_model_are_read(command, rate, tmp_path, capsys) -> None:
    out = tmp_path / "run"  # neither the model nor the data exists: the rate is checked first
    args = ["finetune", command, "--model", str(tmp_path / "no-model"), "--data", str(tmp_path / "no-data.json")]
    assert main([*args, "--out-dir", str(out), "--dropout", rate, "--train.device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"dropout must be in [0, 1), got {rate}" in err and "no-model" not in err and "no-data" not in err
    assert not out.exists()
