"""The attention variants compute what they claim: equal weights give equal outputs, causality holds, and dropout
acts only in training mode."""

from __future__ import annotations

import torch

from scratchllm.config import ModelConfig
from scratchllm.model import (
    CausalAttention,
    GPTModel,
    MultiHeadAttention,
    MultiHeadAttentionWrapper,
    Packing,
    SelfAttention,
    simplified_self_attention,
)


def test_simplified_attention_is_a_weighted_average() -> None:
    x = torch.randn(5, 3)
    out = simplified_self_attention(x)
    weights = torch.softmax(x @ x.T, dim=-1)
    assert torch.allclose(weights.sum(-1), torch.ones(5))
    # Row 2 by hand: sum_j w_2j x_j.
    assert torch.allclose(out[2], (weights[2, :, None] * x).sum(0), atol=1e-6)


def test_causal_attention_without_mask_effect_on_last_row_equals_self_attention() -> None:
    torch.manual_seed(0)
    sa = SelfAttention(4, 6)
    ca = CausalAttention(4, 6, context_length=8)
    ca.load_state_dict(sa.state_dict(), strict=False)
    x = torch.randn(2, 7, 4)
    # The last position sees every token, so the causal mask changes nothing there.
    assert torch.allclose(sa(x)[:, -1], ca(x)[:, -1], atol=1e-6)
    assert not torch.allclose(sa(x)[:, 0], ca(x)[:, 0], atol=1e-3)


def _copy_wrapper_into_fused(wrapper: MultiHeadAttentionWrapper, fused: MultiHeadAttention) -> None:
    """Stack each head's W_q/W_k/W_v as row blocks of the fused qkv and make out_proj the identity."""
    with torch.no_grad():
        for part, name in enumerate(("W_query", "W_key", "W_value")):
            w = torch.cat([getattr(h, name).weight for h in wrapper.heads], dim=0)
            fused.qkv.weight[part * fused.d_out : (part + 1) * fused.d_out] = w
            b = torch.cat([getattr(h, name).bias for h in wrapper.heads], dim=0)
            fused.qkv.bias[part * fused.d_out : (part + 1) * fused.d_out] = b
        fused.out_proj.weight.copy_(torch.eye(fused.out_proj.in_features))
        fused.out_proj.bias.zero_()


def test_wrapper_fused_and_sdpa_agree_with_equal_weights() -> None:
    torch.manual_seed(1)
    d_in, head_dim, heads, T = 10, 4, 3, 9
    wrapper = MultiHeadAttentionWrapper(d_in, head_dim, 16, heads, qkv_bias=True)
    explicit = MultiHeadAttention(d_in, head_dim * heads, heads, qkv_bias=True, use_sdpa=False)
    _copy_wrapper_into_fused(wrapper, explicit)
    sdpa = MultiHeadAttention(d_in, head_dim * heads, heads, qkv_bias=True, use_sdpa=True)
    sdpa.load_state_dict(explicit.state_dict())
    x = torch.randn(2, T, d_in)
    ref = wrapper(x)
    assert torch.allclose(explicit(x), ref, atol=1e-5)
    assert torch.allclose(sdpa(x), ref, atol=1e-5)


def test_future_tokens_never_change_past_outputs() -> None:
    torch.manual_seed(2)
    modules = [
        CausalAttention(8, 8, 12),
        MultiHeadAttentionWrapper(8, 4, 12, 2),
        MultiHeadAttention(8, 8, 2, use_sdpa=False),
        MultiHeadAttention(8, 8, 2, use_sdpa=True),
    ]
    x = torch.randn(1, 10, 8)
    for module in modules:
        base = module(x)
        for t in range(9):
            changed = x.clone()
            changed[:, t + 1] = torch.randn(8) * 5
            out = module(changed)
            assert torch.equal(out[:, : t + 1], base[:, : t + 1]) or torch.allclose(
                out[:, : t + 1], base[:, : t + 1], atol=1e-6, rtol=0
            ), f"{type(module).__name__}: position <= {t} changed"
            assert not torch.allclose(out[:, t + 1], base[:, t + 1])


def test_dropout_only_in_training_mode() -> None:
    torch.manual_seed(3)
    x = torch.randn(2, 6, 8)
    for module in (
        CausalAttention(8, 8, 6, dropout=0.5),
        MultiHeadAttention(8, 8, 2, dropout=0.5, use_sdpa=False),
        MultiHeadAttention(8, 8, 2, dropout=0.5, use_sdpa=True),
    ):
        module.eval()
        assert torch.equal(module(x), module(x))
        module.train()
        torch.manual_seed(4)
        a = module(x)
        torch.manual_seed(5)
        b = module(x)
        assert not torch.allclose(a, b)
        module.eval()
        with torch.no_grad():
            clean = module(x)
        if isinstance(module, MultiHeadAttention):
            module.dropout = 0.0
        else:
            module.dropout.p = 0.0
        module.train()
        assert torch.allclose(module(x), clean, atol=1e-6)  # with p=0 training mode equals eval mode


def _attention_path(model: GPTModel, explicit: bool) -> None:
    """Select the explicit (educational) or the fused SDPA attention in every block of ``model``."""
    for module in model.modules():
        if isinstance(module, MultiHeadAttention):
            module.use_sdpa = not explicit


def test_gpt_model_explicit_attention_equals_fused_with_padding_and_kv_cache(monkeypatch) -> None:
    """Inside GPTModel, the readable softmax(q k^T / sqrt(d)) v path and the fused kernel agree: a full forward
    with left padding, a KV-cache prefill + token-by-token decode of the padded batch, and the gradients."""
    torch.manual_seed(6)
    cfg = ModelConfig(vocab_size=97, context_length=32, emb_dim=24, n_heads=3, n_layers=2)
    model = GPTModel(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (3, 14))
    pad = torch.tensor([0, 3, 7])  # rows 1 and 2 start with 3 and 7 padding tokens

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        full = model(ids, pad=pad)
        cache = model.new_kv_cache(3, pad=pad)
        steps = [model(ids[:, :9], kv_cache=cache)]  # prefill 9 tokens, then decode the rest one at a time
        steps += [model(ids[:, t : t + 1], kv_cache=cache) for t in range(9, 14)]
        return full, torch.cat(steps, dim=1)

    fused_full, fused_cached = run()
    _attention_path(model, explicit=True)
    with monkeypatch.context() as m:  # prove the explicit path runs: the fused kernel is not reachable
        m.setattr(torch.nn.functional, "scaled_dot_product_attention", None)
        explicit_full, explicit_cached = run()
    real = torch.arange(14)[None, :] >= pad[:, None]  # outputs at padding positions are unused
    torch.testing.assert_close(explicit_full[real], fused_full[real], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(explicit_cached[real], fused_cached[real], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused_cached[real], fused_full[real], rtol=1e-5, atol=1e-5)  # cache == none

    grads = []
    for explicit in (True, False):
        _attention_path(model, explicit)
        model.zero_grad()
        model(ids, pad=pad)[real].logsumexp(-1).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_packed_rows_give_each_row_alone_logits_for_gpt_and_llama() -> None:
    """Rows packed back to back without padding (per-token layers on real tokens only, attention unpacked into
    rows) give each row's logits as if it ran alone: GPT-2 (learned positions) and Llama (RoPE, GQA, qk-norm),
    from the start and continuing a shared prefix in a KV cache."""
    torch.manual_seed(3)
    configs = [
        ModelConfig(vocab_size=97, context_length=32, emb_dim=24, n_heads=3, n_layers=2),
        ModelConfig.from_preset(
            "llama-tiny", vocab_size=97, context_length=32, emb_dim=24, n_heads=4, n_kv_heads=2, n_layers=2,
            hidden_dim=40, qk_norm=True,
        ),
    ]  # fmt: skip
    for cfg in configs:
        model = GPTModel(cfg).eval()
        rows = [torch.randint(0, 97, (n,)) for n in (7, 2, 11, 5)]
        packing = Packing([len(r) for r in rows])
        tokens = torch.cat(rows)[None]
        with torch.no_grad():
            alone = [model(r[None])[0] for r in rows]
            packed = model(tokens, packing=packing)
            torch.testing.assert_close(packed[0], torch.cat(alone), rtol=1e-5, atol=1e-5)
            last = model(tokens, packing=packing, last_only=True)
            torch.testing.assert_close(last[0], torch.stack([a[-1] for a in alone]), rtol=1e-5, atol=1e-5)

            prefix = torch.randint(0, 97, (6,))
            cache = model.new_kv_cache(len(rows), max_len=6 + packing.width)
            model(prefix.expand(len(rows), 6), kv_cache=cache)
            continued = model(tokens, kv_cache=cache, packing=packing)
            whole = [model(torch.cat([prefix, r])[None])[0, 6:] for r in rows]
            torch.testing.assert_close(continued[0], torch.cat(whole), rtol=1e-5, atol=1e-5)


def test_packing_refuses_an_empty_row_and_left_padding() -> None:
    import pytest

    with pytest.raises(ValueError, match="at least one token"):
        Packing([3, 0, 2])
    model = GPTModel(ModelConfig(vocab_size=97, context_length=32, emb_dim=24, n_heads=3, n_layers=1))
    with pytest.raises(ValueError, match="cannot be combined with left padding"):
        model(torch.zeros(1, 5, dtype=torch.long), pad=torch.tensor([1, 0]), packing=Packing([3, 2]))
