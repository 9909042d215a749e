"""The signature-driven command line: flags, YAML configs, precedence and errors."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from scratchllm.errors import ScratchLLMError
from scratchllm.signature_cli import add_command, coerce, parse_docstring


@dataclass
class Opt:
    """Optimizer settings.

    Attributes:
        lr: peak learning rate.
        betas: Adam betas.
    """

    lr: float = 3e-4
    betas: list[float] | None = None
    schedule: Literal["cosine", "constant"] = "cosine"


def job(
    input: list[str], vocab_size: int = 512, out: Path | None = None, fast: bool = True, opt: Opt = Opt()
):
    """Do a job.

    Args:
        input: files to read.
        vocab_size: how many
            tokens in total.
    """
    return dict(input=input, vocab_size=vocab_size, out=out, fast=fast, opt=opt)


def _parse(argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_command(sub, "job", job)
    ns = parser.parse_args(["job", *argv])
    return job(**ns._command.kwargs_from(ns))


def test_flags_use_dashes_lists_and_bools():
    got = _parse(["--input", "a.txt", "b.txt", "--vocab-size", "300", "--no-fast", "--opt.lr", "0.1"])
    assert got["input"] == ["a.txt", "b.txt"]
    assert got["vocab_size"] == 300
    assert got["fast"] is False
    assert got["opt"].lr == pytest.approx(0.1)
    assert got["opt"].schedule == "cosine"
    assert got["out"] is None


def test_yaml_config_then_flags_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("input: [x.txt]\nvocab_size: 1000\nopt:\n  lr: 3e-3\n  schedule: constant\n")
    got = _parse(["--config", str(cfg), "--vocab-size", "2000"])
    assert got["input"] == ["x.txt"]
    assert got["vocab_size"] == 2000  # flag beats YAML
    assert got["opt"].lr == pytest.approx(3e-3)  # PyYAML reads 3e-3 as a string: coerced to float
    assert got["opt"].schedule == "constant"


def test_yaml_unknown_keys_and_bad_types_name_the_field(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("input: [x]\nvocab_sise: 3\n")
    with pytest.raises(ScratchLLMError, match="vocab_sise"):
        _parse(["--config", str(cfg)])
    cfg.write_text("input: [x]\nopt:\n  lr: fast\n")
    with pytest.raises(ScratchLLMError, match=r"opt\.lr: expected a number"):
        _parse(["--config", str(cfg)])
    cfg.write_text("input: [x]\nopt:\n  warmup: 3\n")
    with pytest.raises(ScratchLLMError, match="unknown field 'warmup'"):
        _parse(["--config", str(cfg)])
    cfg.write_text("input: [x\n")
    with pytest.raises(ScratchLLMError, match=r"c\.yaml:\d+: invalid YAML"):
        _parse(["--config", str(cfg)])


def test_missing_required_argument_is_named():
    with pytest.raises(ScratchLLMError, match="--input is required"):
        _parse([])


def test_coerce_rejects_wrong_kinds():
    with pytest.raises(ScratchLLMError):
        coerce(True, int, "x")
    with pytest.raises(ScratchLLMError):
        coerce("maybe", bool, "x")
    with pytest.raises(ScratchLLMError, match="one of cosine, constant"):
        coerce("linear", Literal["cosine", "constant"], "x")
    assert coerce("7", int | None, "x") == 7
    assert coerce(None, int | None, "x") is None


def test_docstring_help_is_parsed():
    description, params = parse_docstring(job.__doc__)
    assert description == "Do a job."
    assert params["vocab_size"] == "how many tokens in total."


def test_positional_parameters_take_a_bare_word_or_the_flag():
    from scratchllm.signature_cli import positional

    @positional("name")
    def fetch(name: str = "", force: bool = False):
        return name, force

    parser = argparse.ArgumentParser()
    add_command(parser.add_subparsers(), "fetch", fetch)
    for argv in (["fetch", "gpt2", "--force"], ["fetch", "--name", "gpt2", "--force"]):
        ns = parser.parse_args(argv)
        assert fetch(**ns._command.kwargs_from(ns)) == ("gpt2", True)
