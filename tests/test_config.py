"""ModelConfig validation and presets."""

from __future__ import annotations

import pytest

from scratchllm.config import MODEL_PRESETS, ModelConfig
from scratchllm.errors import ScratchLLMError


def test_presets_build_and_round_trip_through_dict():
    for name in MODEL_PRESETS:
        cfg = ModelConfig.from_preset(name)
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg
        assert cfg.head_dim * cfg.n_heads == cfg.emb_dim or name == "qwen3-0.6b"  # Qwen3 sets head_dim


def test_overrides_apply():
    cfg = ModelConfig.from_preset("tiny", vocab_size=300, context_length=64)
    assert (cfg.vocab_size, cfg.context_length) == (300, 64)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"emb_dim": 100, "n_heads": 3}, "divisible by n_heads"),
        ({"n_layers": 0}, "n_layers must be a positive integer"),
        ({"drop_rate": 1.5}, "drop_rate"),
        ({"vocab_size": True}, "vocab_size"),
    ],
)
def test_invalid_shapes_are_named(fields, message):
    with pytest.raises(ScratchLLMError, match=message):
        ModelConfig(**fields)


def test_unknown_fields_and_presets_are_rejected():
    with pytest.raises(ScratchLLMError, match="unknown field.*n_head"):
        ModelConfig.from_dict({"n_head": 12})
    with pytest.raises(ScratchLLMError, match="unknown model preset 'gpt3'"):
        ModelConfig.from_preset("gpt3")
