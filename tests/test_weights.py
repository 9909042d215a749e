"""Our checkpoint format and Hugging Face GPT-2 interop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from scratchllm.config import ModelConfig
from scratchllm.errors import ScratchLLMError
from scratchllm.model import GPTModel
from scratchllm.weights import load_model, save_model


def tiny(**overrides) -> ModelConfig:
    base = dict(vocab_size=97, context_length=37, emb_dim=24, n_heads=3, n_layers=2)
    return ModelConfig(**{**base, **overrides})


@pytest.mark.parametrize("tie", [True, False])
def test_save_load_round_trip_is_exact(tmp_path: Path, tie: bool) -> None:
    torch.manual_seed(0)
    model = GPTModel(tiny(tie_embeddings=tie, qkv_bias=not tie))
    save_model(model, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temp folder left behind
    loaded = load_model(tmp_path / "ckpt")
    assert loaded.config == model.config
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert (loaded.lm_head.weight is loaded.tok_emb.weight) == tie
    idx = torch.randint(0, 97, (2, 9))
    assert torch.equal(model.eval()(idx), loaded(idx))
    # Saving over an existing checkpoint replaces it.
    other = GPTModel(tiny(tie_embeddings=tie, qkv_bias=not tie))
    save_model(other, tmp_path / "ckpt")
    assert torch.equal(load_model(tmp_path / "ckpt").tok_emb.weight, other.tok_emb.weight)


def test_load_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ScratchLLMError, match="not found"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScratchLLMError, match="missing config.json"):
        load_model(tmp_path / "empty")
    model = GPTModel(tiny())
    save_model(model, tmp_path / "ck")
    (tmp_path / "ck" / "model.safetensors").unlink()
    with pytest.raises(ScratchLLMError, match="missing model.safetensors"):
        load_model(tmp_path / "ck")
    save_model(model, tmp_path / "ck2")
    cfg = json.loads((tmp_path / "ck2" / "config.json").read_text())
    cfg["model"]["emb_dim"] = 30
    (tmp_path / "ck2" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ScratchLLMError, match=r"tok_emb.weight has shape \[97, 24\], expected \[97, 30\]"):
        load_model(tmp_path / "ck2")
    cfg["model"]["emb_dim"] = 24
    cfg["model"]["n_layers"] = 3
    (tmp_path / "ck2" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ScratchLLMError, match=r"missing tensor\(s\) blocks.2.att.out_proj.bias"):
        load_model(tmp_path / "ck2")
    cfg["model"]["n_layers"] = 1
    (tmp_path / "ck2" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ScratchLLMError, match=r"unexpected tensor\(s\) blocks.1"):
        load_model(tmp_path / "ck2")
    (tmp_path / "ck2" / "config.json").write_text("{oops")
    with pytest.raises(ScratchLLMError, match="invalid JSON"):
        load_model(tmp_path / "ck2")
