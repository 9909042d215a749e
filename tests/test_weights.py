"""Our checkpoint format and Hugging Face GPT-2 interop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from scratchllm.config import ModelConfig
from scratchllm.errors import ScratchLLMError
from scratchllm.model import GPTModel
from scratchllm.weights import from_hf, load_model, save_model, to_hf

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


# ---------------------------------------------------------------------------------------- Hugging Face
def hf_tiny(
    transformers, n_embd: int = 24, n_head: int = 3, n_layer: int = 2, n_positions: int = 37, tie: bool = True
):
    config = transformers.GPT2Config(
        vocab_size=101,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        tie_word_embeddings=tie,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # biases and norms are zero/one at init; make them random so the mapping is tested
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize(
    "shape",
    [
        {"n_embd": 24, "n_head": 3, "n_layer": 2, "n_positions": 37, "tie": True},
        {"n_embd": 24, "n_head": 3, "n_layer": 2, "n_positions": 37, "tie": False},
        {"n_embd": 20, "n_head": 5, "n_layer": 3, "n_positions": 16, "tie": True},
        {"n_embd": 16, "n_head": 1, "n_layer": 1, "n_positions": 50, "tie": False},
    ],
)
def test_from_hf_logits_match_transformers(tmp_path: Path, shape: dict, transformers) -> None:
    hf = hf_tiny(transformers, **shape)
    hf.save_pretrained(tmp_path / "hf")
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    ours = load_model(tmp_path / "hf")  # auto-detects the HF folder
    assert ours.config.tie_embeddings == shape["tie"]
    assert ours.config.context_length == shape["n_positions"]
    idx = torch.randint(0, 101, (2, shape["n_positions"]))
    with torch.no_grad():
        expected = hf(idx).logits
    assert torch.allclose(ours(idx), expected, atol=1e-4)


@pytest.mark.parametrize("tie", [True, False])
def test_round_trip_ours_hf_ours_is_exact(tmp_path: Path, tie: bool, transformers) -> None:
    torch.manual_seed(1)
    model = GPTModel(tiny(tie_embeddings=tie)).eval()
    to_hf(model, tmp_path / "hf")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    idx = torch.randint(0, 97, (2, 37))
    with torch.no_grad():
        assert torch.allclose(hf(idx).logits, model(idx), atol=1e-4)
    back = from_hf(tmp_path / "hf")
    assert back.config == model.config
    for (name, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("overrides", [{"qkv_bias": False}, {"qkv_bias": False, "bias": False}])
def test_model_without_biases_exports_zero_biases(tmp_path: Path, overrides: dict, transformers) -> None:
    model = GPTModel(tiny(**overrides)).eval()
    to_hf(model, tmp_path / "hf")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    idx = torch.randint(0, 97, (1, 20))
    with torch.no_grad():
        assert torch.allclose(hf(idx).logits, model(idx), atol=1e-4)


def test_from_hf_pytorch_bin(tmp_path: Path, transformers) -> None:
    hf = hf_tiny(transformers, tie=False)
    hf.save_pretrained(tmp_path / "hf")
    folder = tmp_path / "hf"
    # The legacy format: the same state dict in pytorch_model.bin, written with torch.save.
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    ours = from_hf(folder)
    idx = torch.randint(0, 101, (1, 30))
    with torch.no_grad():
        assert torch.allclose(ours(idx), hf(idx).logits, atol=1e-4)


def test_hf_errors(tmp_path: Path, transformers) -> None:
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "hf"
    hf_tiny(transformers).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    weights = load_file(folder / "model.safetensors")

    def write(cfg: dict | None = None, tensors: dict | None = None) -> None:
        (folder / "config.json").write_text(json.dumps(cfg or config))
        save_file(tensors or weights, folder / "model.safetensors")

    write({**config, "model_type": "mistral", "architectures": ["MistralForCausalLM"]})
    with pytest.raises(ScratchLLMError, match=r"'MistralForCausalLM'\] \(model_type 'mistral'\) is not supported"):
        load_model(folder)
    bad = dict(weights)
    bad["transformer.h.1.mlp.c_fc.weight"] = torch.zeros(24, 95)
    write(tensors=bad)
    with pytest.raises(
        ScratchLLMError, match=r"transformer.h.1.mlp.c_fc.weight has shape \[24, 95\], expected \[24, 96\]"
    ):
        load_model(folder)
    bad = {k: v for k, v in weights.items() if k != "transformer.h.0.attn.c_proj.bias"}
    write(tensors=bad)
    with pytest.raises(ScratchLLMError, match=r"missing tensor\(s\) transformer.h.0.attn.c_proj.bias"):
        load_model(folder)
    write(tensors={**weights, "transformer.h.0.attn.rotary.weight": torch.zeros(2)})
    with pytest.raises(ScratchLLMError, match=r"unexpected tensor\(s\) transformer.h.0.attn.rotary.weight"):
        load_model(folder)
    write({**config, "tie_word_embeddings": False})
    with pytest.raises(ScratchLLMError, match=r"missing tensor\(s\) lm_head.weight"):
        load_model(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ScratchLLMError, match="missing model.safetensors"):
        from_hf(folder)
    (folder / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ScratchLLMError, match="cannot read safetensors"):
        from_hf(folder)
