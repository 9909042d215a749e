"""The shipped finetuning presets load against their commands' signatures, as the CLI reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from scratchllm.cli import parse_command
from scratchllm.config import LoRAConfig, TrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "finetune"


@pytest.mark.parametrize(
    ("name", "command"), [("sms-spam-classify.yaml", "classify"), ("alpaca-instruct.yaml", "instruct")]
)
def test_finetune_preset_loads(name: str, command: str) -> None:
    func, kwargs = parse_command(["finetune", command, "--config", str(CONFIGS / name), "--model", "m.gguf"])
    assert func.__name__ == f"finetune_{command}"
    assert isinstance(kwargs["train"], TrainConfig) and isinstance(kwargs["lora"], LoRAConfig)
    assert kwargs["model"] == Path("m.gguf") and kwargs["epochs"] >= 1
    if command == "classify":
        assert kwargs["balance"] and kwargs["text_column"] == "1" and kwargs["lora"].rank == 16
