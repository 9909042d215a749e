"""Decoding layouts: column-major and oneDNN-packed weights give the same model; column-major saves ordinary checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scratchllm.config import ModelConfig
from scratchllm.generation import generate
from scratchllm.model import GPTModel, optimize_for_decoding, set_weight_layout, weight_layout
from scratchllm.model.decoding_layout import PackedLinear, pack_for_decoding, packing_available
from scratchllm.weights import load_model, save_model


def tiny(**overrides) -> ModelConfig:
    base = dict(vocab_size=101, context_length=48, emb_dim=32, n_heads=4, n_layers=2, qkv_bias=True)
    return ModelConfig(**{**base, **overrides})


def matrices(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: m.weight for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Embedding))}


def test_weight_layout_names_row_and_column() -> None:
    w = torch.randn(5, 3)
    assert weight_layout(w) == "row"
    assert weight_layout(w.t().contiguous().t()) == "column"
    assert weight_layout(w[:, ::2]) is None
    assert weight_layout(torch.randn(4)) is None


@pytest.mark.parametrize("tie", [True, False])
def test_column_layout_keeps_parameters_values_and_tying(tie: bool) -> None:
    torch.manual_seed(0)
    model = GPTModel(tiny(tie_embeddings=tie))
    params = {name: (p, p.detach().clone()) for name, p in model.named_parameters()}
    keys = list(model.state_dict())
    set_weight_layout(model, "column")
    assert all(weight_layout(w) == "column" for w in matrices(model).values())
    for name, p in model.named_parameters():
        assert p is params[name][0], f"{name} was replaced, not re-strided"
        assert torch.equal(p, params[name][1]), name
    assert (model.lm_head.weight is model.tok_emb.weight) == tie
    assert list(model.state_dict()) == keys
    set_weight_layout(model, "row")
    assert all(w.is_contiguous() for w in matrices(model).values())


def test_unknown_layout_is_rejected() -> None:
    with pytest.raises(ValueError, match="row' or 'column"):
        set_weight_layout(GPTModel(tiny()), "diagonal")  # type: ignore[arg-type]


@pytest.mark.parametrize("tie", [True, False])
def test_column_layout_gives_the_same_logits_and_tokens(tie: bool) -> None:
    torch.manual_seed(1)
    model = GPTModel(tiny(tie_embeddings=tie)).eval()
    idx = torch.randint(0, 101, (3, 17))
    prompts = [[5, 9, 2], [7, 1, 4, 4, 8, 30, 2], [11]]
    with torch.no_grad():
        ref_logits = model(idx)
    ref_tokens = generate(model, prompts, 60)
    optimize_for_decoding(model)
    with torch.no_grad():
        torch.testing.assert_close(model(idx), ref_logits, rtol=1e-5, atol=1e-5)
    assert generate(model, prompts, 60) == ref_tokens
    assert generate(model, prompts, 60, use_cache=False) == ref_tokens


def test_optimize_for_decoding_sets_eval_mode_and_column_major_for_fp32_on_cpu() -> None:
    model = GPTModel(tiny(drop_rate=0.1)).train()
    assert optimize_for_decoding(model) is model
    assert not model.training
    assert weight_layout(model.blocks[0].ff.fc.weight) == "column"
    bf16 = optimize_for_decoding(model.to(torch.bfloat16))  # .to() keeps the column-major strides
    assert weight_layout(bf16.blocks[0].ff.fc.weight) == "row"  # bf16 kernels prefer row-major


def test_checkpoint_of_a_column_major_model_is_ordinary(tmp_path) -> None:
    torch.manual_seed(2)
    model = optimize_for_decoding(GPTModel(tiny()))
    save_model(model, tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt")
    assert all(w.is_contiguous() for w in matrices(loaded).values())
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_column_major_model_still_trains_like_a_row_major_one() -> None:
    torch.manual_seed(3)
    row = GPTModel(tiny())
    col = GPTModel(tiny())
    col.load_state_dict(row.state_dict())
    set_weight_layout(col, "column")
    idx = torch.randint(0, 101, (2, 20))
    for model in (row, col):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        loss = nn.functional.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten())
        loss.backward()
        opt.step()
    for (name, a), b in zip(row.state_dict().items(), col.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


needs_packing = pytest.mark.skipif(not packing_available(), reason="this PyTorch build has no oneDNN packing")
LLAMA = dict(pos="rope", norm="rmsnorm", mlp="swiglu", n_kv_heads=2, bias=False, qkv_bias=False, hidden_dim=48)


@needs_packing
@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("tie", [True, False])
def test_packed_linears_give_the_same_logits_and_tokens(family: str, tie: bool) -> None:
    torch.manual_seed(4)
    model = GPTModel(tiny(tie_embeddings=tie, **(LLAMA if family == "llama" else {}))).eval()
    idx = torch.randint(0, 101, (3, 17))
    prompts = [[5, 9, 2], [7, 1, 4, 4, 8, 30, 2], [11]]
    with torch.no_grad():
        ref_logits = model(idx)
    ref_tokens = generate(model, prompts, 40)
    assert optimize_for_decoding(model, pack=True) is model
    linears = [m for m in model.modules() if isinstance(m, (nn.Linear, PackedLinear))]
    assert linears and all(isinstance(m, PackedLinear) for m in linears)  # every linear, the head included
    assert model.tok_emb.weight.shape == (101, 32)  # a tied embedding keeps its own table
    with torch.no_grad():
        torch.testing.assert_close(model(idx), ref_logits, rtol=1e-5, atol=1e-5)
    assert generate(model, prompts, 40) == ref_tokens


@needs_packing
def test_packing_leaves_bf16_models_alone_and_is_refused_where_unavailable(monkeypatch) -> None:
    bf16 = optimize_for_decoding(GPTModel(tiny()).to(torch.bfloat16), pack=True)  # fp32 only: nothing packed
    assert not any(isinstance(m, PackedLinear) for m in bf16.modules())
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    fp32 = optimize_for_decoding(GPTModel(tiny()), pack=True)  # falls back to column-major weights
    assert weight_layout(fp32.blocks[0].ff.fc.weight) == "column"
    with pytest.raises(RuntimeError, match="no oneDNN weight packing"):
        pack_for_decoding(GPTModel(tiny()))
