"""GPTModel: shapes, GPT-2 parameter counts, init, causality, summary."""

from __future__ import annotations

import math

import pytest
import torch

from scratchllm.config import ModelConfig
from scratchllm.errors import ScratchLLMError
from scratchllm.model import GELU, GPTModel, LayerNorm, model_summary


def tiny(**overrides) -> ModelConfig:
    base = dict(vocab_size=97, context_length=32, emb_dim=24, n_heads=3, n_layers=2)
    return ModelConfig(**{**base, **overrides})


def test_forward_shape_and_tying() -> None:
    torch.manual_seed(0)
    model = GPTModel(tiny())
    logits = model(torch.randint(0, 97, (2, 11)))
    assert logits.shape == (2, 11, 97)
    assert model.lm_head.weight is model.tok_emb.weight
    untied = GPTModel(tiny(tie_embeddings=False))
    assert untied.lm_head.weight is not untied.tok_emb.weight
    assert untied.num_parameters() == model.num_parameters() + 97 * 24


def test_gpt2_small_parameter_count() -> None:
    # 124,439,808 is the published count of the Hugging Face gpt2 checkpoint (tied embeddings).
    assert model_summary(ModelConfig.from_preset("gpt2-small")).parameters == 124_439_808


def test_gpt2_medium_parameter_count_on_meta_device() -> None:
    with torch.device("meta"):
        model = GPTModel(ModelConfig.from_preset("gpt2-medium"))
    assert model.tok_emb.weight.is_meta
    # GPT-2 medium: 354,823,168 parameters (Hugging Face gpt2-medium).
    assert model.num_parameters() == 354_823_168
    # Independently from the formula: embeddings + per layer (12 d^2 + 13 d) + final norm.
    d, L, V, C = 1024, 24, 50257, 1024
    assert model.num_parameters() == V * d + C * d + L * (12 * d * d + 13 * d) + 2 * d


def test_summary_memory() -> None:
    s = model_summary(tiny())
    assert s.bytes_fp32 == 4 * s.parameters and s.bytes_bf16 == 2 * s.parameters
    assert s.training_bytes_fp32 == 16 * s.parameters
    assert s.embedding == 97 * 24 + 32 * 24
    assert "parameters" in str(s)


def test_init_follows_gpt2() -> None:
    torch.manual_seed(0)
    cfg = tiny(emb_dim=256, n_heads=4, n_layers=8, vocab_size=2000)
    model = GPTModel(cfg)
    assert abs(model.tok_emb.weight.std().item() - 0.02) < 1e-3
    assert abs(model.blocks[0].att.qkv.weight.std().item() - 0.02) < 1e-3
    expected = 0.02 / math.sqrt(2 * cfg.n_layers)
    assert abs(model.blocks[0].att.out_proj.weight.std().item() - expected) < 5e-4
    assert abs(model.blocks[0].ff.proj.weight.std().item() - expected) < 5e-4
    assert torch.count_nonzero(model.blocks[0].ff.fc.bias) == 0


def test_layernorm_and_gelu_match_their_formulas() -> None:
    x = torch.randn(4, 16)
    ln = LayerNorm(16)
    with torch.no_grad():
        ln.weight.uniform_()
        ln.bias.uniform_()
    mean, var = x.mean(-1, keepdim=True), x.var(-1, keepdim=True, unbiased=False)
    assert torch.allclose(ln(x), (x - mean) / torch.sqrt(var + 1e-5) * ln.weight + ln.bias, atol=1e-5)
    gelu = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    assert torch.allclose(GELU()(x), gelu, atol=1e-6)


def test_model_is_causal_and_rejects_overlong_input() -> None:
    torch.manual_seed(0)
    model = GPTModel(tiny()).eval()
    idx = torch.randint(0, 97, (1, 12))
    base = model(idx)
    changed = idx.clone()
    changed[0, 7] = (changed[0, 7] + 1) % 97
    out = model(changed)
    assert torch.allclose(out[:, :7], base[:, :7], atol=1e-6)
    assert not torch.allclose(out[:, 7], base[:, 7])
    with pytest.raises(ValueError, match="context_length"):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_left_padding_matches_unpadded() -> None:
    torch.manual_seed(0)
    model = GPTModel(tiny()).eval()
    short = torch.randint(0, 97, (1, 5))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), short], dim=1)
    out = model(padded, pad=torch.tensor([3]))
    assert torch.allclose(out[:, 3:], model(short), atol=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_set_dropout_reaches_every_layer_and_eval_turns_it_off(family: str) -> None:
    llama = dict(norm="rmsnorm", mlp="swiglu", pos="rope", n_kv_heads=1, bias=False) if family == "llama" else {}
    torch.manual_seed(0)
    model = GPTModel(tiny(**llama)).eval()
    x = torch.randint(0, 97, (2, 9))
    before = model(x)
    model.set_dropout(0.3)
    assert model.config.drop_rate == 0.3
    rates = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(rates) == 1 + 2 and set(rates) == {0.3}  # embeddings + one per block
    assert [b.att.dropout for b in model.blocks] == [0.3, 0.3]  # the attention weights' dropout (SDPA)
    assert torch.equal(model(x), before)  # eval mode: no dropout
    model.train()
    assert not torch.allclose(model(x), model(x))
    model.set_dropout(0.0)
    assert torch.allclose(model(x), before, atol=1e-6)  # train mode, rate 0: the same function again
    with pytest.raises(ScratchLLMError, match=r"dropout must be in \[0, 1\), got 1.0"):
        model.set_dropout(1.0)


def test_training_step_reduces_loss() -> None:
    torch.manual_seed(0)
    model = GPTModel(tiny(drop_rate=0.1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randint(0, 97, (4, 16))
    losses = []
    for _ in range(10):
        logits = model(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0


def test_kv_cache_logits_equal_full_forward() -> None:
    torch.manual_seed(0)
    model = GPTModel(tiny()).eval()
    idx = torch.randint(0, 97, (2, 20))
    full = model(idx)
    cache = model.new_kv_cache(batch_size=2)
    assert cache.k.shape == (2, 2, 3, 32, 8)  # layers, batch, heads, context, head_dim
    pieces = [model(idx[:, :7], kv_cache=cache)]  # prefill 7 tokens, then 3 + one at a time
    pieces.append(model(idx[:, 7:10], kv_cache=cache))
    for t in range(10, 20):
        pieces.append(model(idx[:, t : t + 1], kv_cache=cache))
    assert cache.length == 20
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)
    with pytest.raises(ValueError, match="context_length"):
        model(torch.zeros(2, 13, dtype=torch.long), kv_cache=cache)


def test_last_only_logits() -> None:
    torch.manual_seed(0)
    model = GPTModel(tiny()).eval()
    idx = torch.randint(0, 97, (2, 9))
    assert torch.allclose(model(idx, last_only=True), model(idx)[:, -1:], atol=1e-6)
