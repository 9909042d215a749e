"""The Llama-family pieces: RoPE (teaching vs fast), RMSNorm, SwiGLU, grouped-query attention, and the whole
decoder with them: KV cache, batched generation, decoding layout, training step, pretraining recipe."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from scratchllm.config import ModelConfig
from scratchllm.generation import generate
from scratchllm.model import (
    GPTModel,
    MultiHeadAttention,
    RMSNorm,
    RotaryEmbedding,
    SwiGLU,
    apply_rope,
    apply_rope_complex,
    model_summary,
    optimize_for_decoding,
    rope_frequencies,
    weight_layout,
)

LLAMA3 = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}


def llama(**overrides) -> ModelConfig:
    base = dict(vocab_size=97, context_length=40, emb_dim=32, n_heads=4, n_kv_heads=2, n_layers=2, hidden_dim=48)
    return ModelConfig.from_preset("llama-tiny", **{**base, **overrides})


# ---------------------------------------------------------------------------------------- RoPE
@pytest.mark.parametrize("scaling", [None, LLAMA3])
def test_complex_rope_equals_rotate_half_rope(scaling) -> None:
    """The textbook rotation (interleaved pairs as complex numbers) and the fast one agree, layouts matched."""
    torch.manual_seed(0)
    head_dim, T = 16, 50
    x_half = torch.randn(2, 3, T, head_dim)  # [B, heads, T, head_dim], rotate-half layout
    # Rotate-half pair i is (i, i + head_dim/2); interleaved pair i is (2i, 2i + 1): interleave the halves.
    order = torch.stack([torch.arange(head_dim // 2), torch.arange(head_dim // 2) + head_dim // 2], 1).flatten()
    positions = torch.arange(T)
    cos, sin = RotaryEmbedding(head_dim, 500.0, scaling)(positions)
    fast = apply_rope(x_half, cos, sin)
    teaching = apply_rope_complex(x_half[..., order], positions, rope_frequencies(head_dim, 500.0, scaling))
    assert torch.allclose(fast[..., order], teaching, atol=1e-5)


def test_rope_scores_depend_only_on_relative_position() -> None:
    torch.manual_seed(1)
    rope = RotaryEmbedding(8, 10000.0)
    q, k = torch.randn(8), torch.randn(8)

    def score(m: int, n: int) -> float:
        cos, sin = rope(torch.tensor([m, n]))
        q_m = apply_rope(q, cos[0, 0, 0], sin[0, 0, 0])
        k_n = apply_rope(k, cos[0, 0, 1], sin[0, 0, 1])
        return float(q_m @ k_n)

    assert score(5, 2) == pytest.approx(score(105, 102), abs=1e-4)
    assert score(0, 0) == pytest.approx(float(q @ k), abs=1e-5)  # position 0 is no rotation
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-3)


def test_llama3_scaling_stretches_only_low_frequencies() -> None:
    plain = rope_frequencies(64, 500000.0)
    scaled = rope_frequencies(64, 500000.0, {**LLAMA3, "original_max_position_embeddings": 8192})
    wavelength = 2 * math.pi / plain
    assert torch.equal(scaled[wavelength < 8192 / 4], plain[wavelength < 8192 / 4])  # high frequencies kept
    assert torch.allclose(scaled[wavelength > 8192], plain[wavelength > 8192] / 8)  # low ones slowed by factor
    between = (wavelength >= 8192 / 4) & (wavelength <= 8192)
    assert between.any()
    assert bool(((scaled[between] < plain[between]) & (scaled[between] > plain[between] / 8)).all())


# ---------------------------------------------------------------------------------------- norms, MLP
def test_rmsnorm_matches_the_formula_and_torch() -> None:
    torch.manual_seed(2)
    norm = RMSNorm(12, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(3, 5, 12) * 4 + 1
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    assert torch.allclose(norm(x), expected, atol=1e-5)
    assert torch.allclose(norm(x), F.rms_norm(x, (12,), norm.weight, 1e-6), atol=1e-5)
    assert norm.bfloat16()(x.bfloat16()).dtype == torch.bfloat16


def test_swiglu_is_gated_silu() -> None:
    torch.manual_seed(3)
    cfg = llama()
    ff = SwiGLU(cfg)
    x = torch.randn(2, 4, cfg.emb_dim)
    gate_w, up_w = ff.fc.weight.chunk(2, dim=0)
    expected = (F.silu(x @ gate_w.T) * (x @ up_w.T)) @ ff.proj.weight.T
    assert torch.allclose(ff(x), expected, atol=1e-5)
    assert ff.fc.bias is None and ff.proj.bias is None


# ---------------------------------------------------------------------------------------- attention
@pytest.mark.parametrize("kv_heads", [6, 3, 2, 1])
def test_gqa_equals_mha_with_shared_key_value_heads(kv_heads: int) -> None:
    """Grouped-query attention is multi-head attention whose key/value heads are copies within each group;
    the explicit path and SDPA agree, with rotary embeddings and q/k norm on."""
    torch.manual_seed(4)
    H, hd, d, T = 6, 4, 20, 7
    gqa = MultiHeadAttention(d, d, H, use_sdpa=True, num_kv_heads=kv_heads, head_dim=hd, qk_norm=True)
    explicit = MultiHeadAttention(d, d, H, use_sdpa=False, num_kv_heads=kv_heads, head_dim=hd, qk_norm=True)
    mha = MultiHeadAttention(d, d, H, use_sdpa=False, num_kv_heads=H, head_dim=hd, qk_norm=True)
    with torch.no_grad():
        for norm in (gqa.q_norm, gqa.k_norm):
            norm.weight.normal_()
    explicit.load_state_dict(gqa.state_dict())
    q, k, v = gqa.qkv.weight.split([H * hd, kv_heads * hd, kv_heads * hd])
    repeat = lambda w: w.view(kv_heads, hd, d).repeat_interleave(H // kv_heads, 0).reshape(H * hd, d)  # noqa: E731
    mha.load_state_dict({**gqa.state_dict(), "qkv.weight": torch.cat([q, repeat(k), repeat(v)])})
    x = torch.randn(2, T, d)
    rope = RotaryEmbedding(hd)(torch.arange(T))
    out = gqa(x, rope=rope)
    assert torch.allclose(explicit(x, rope=rope), out, atol=1e-5)
    assert torch.allclose(mha(x, rope=rope), out, atol=1e-5)
    assert gqa.qkv.weight.shape == ((H + 2 * kv_heads) * hd, d)


@pytest.mark.parametrize("overrides", [{}, {"n_kv_heads": 1}, {"n_kv_heads": 4, "qk_norm": True, "head_dim": 6},
                                       {"qkv_bias": True, "tie_embeddings": False, "rope_scaling": LLAMA3}])
def test_kv_cache_stores_kv_heads_and_matches_full_forward(overrides: dict) -> None:
    torch.manual_seed(5)
    model = GPTModel(llama(**overrides)).eval()
    idx = torch.randint(0, 97, (2, 30))
    full = model(idx)
    cache = model.new_kv_cache(batch_size=2)
    cfg = model.config
    assert cache.k.shape == (cfg.n_layers, 2, cfg.n_kv_heads, cfg.context_length, cfg.head_dim)
    pieces = [model(idx[:, :8], kv_cache=cache), model(idx[:, 8:11], kv_cache=cache)]  # prefill, a chunk
    pieces += [model(idx[:, t : t + 1], kv_cache=cache) for t in range(11, 30)]  # then one token at a time
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)


def test_generate_cached_equals_uncached_and_padded_batches_equal_single_prompts() -> None:
    torch.manual_seed(6)
    model = GPTModel(llama()).eval()
    prompts = [[5, 9, 2, 7, 7, 1], [3, 4]]
    for kwargs in ({"temperature": 0.0}, {"temperature": 1.0, "top_k": 20, "seed": 7}):
        cached = generate(model, prompts, max_new_tokens=12, **kwargs)
        assert cached == generate(model, prompts, max_new_tokens=12, use_cache=False, **kwargs)
    batched = generate(model, prompts, max_new_tokens=12)
    assert batched == [generate(model, [p], max_new_tokens=12)[0] for p in prompts]


def test_optimize_for_decoding_handles_every_linear() -> None:
    torch.manual_seed(7)
    model = GPTModel(llama(qk_norm=True, tie_embeddings=False))
    idx = torch.randint(0, 97, (1, 12))
    before = model.eval()(idx)
    optimize_for_decoding(model)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 4 * 2 + 1  # qkv, out_proj, fc (gate + up), proj in each block; the LM head
    assert all(weight_layout(m.weight) == "column" for m in linears)
    assert torch.allclose(model(idx), before, atol=1e-5)
    model.to(torch.bfloat16)
    optimize_for_decoding(model)
    assert all(weight_layout(m.weight) == "row" for m in linears)
    assert len(generate(model, idx, max_new_tokens=5)[0]) == 5


# ---------------------------------------------------------------------------------------- the model
def test_llama_model_has_no_position_table_and_no_biases_elsewhere() -> None:
    model = GPTModel(llama(qkv_bias=True))
    names = set(model.state_dict())
    assert "pos_emb.weight" not in names
    assert {n for n in names if n.endswith("bias")} == {f"blocks.{i}.att.qkv.bias" for i in range(2)}
    summary = model_summary(model.config)
    assert summary.parameters == model.num_parameters() == model.num_parameters(exclude_embeddings=True)
    assert summary.embedding == 97 * 32


def test_gpt2_config_json_of_older_checkpoints_still_loads() -> None:
    old = {"vocab_size": 97, "context_length": 16, "emb_dim": 24, "n_heads": 3, "n_layers": 2, "drop_rate": 0.0,
           "qkv_bias": True, "tie_embeddings": True, "layer_norm_eps": 1e-5}
    cfg = ModelConfig.from_dict(old)
    assert (cfg.pos, cfg.norm, cfg.mlp, cfg.n_kv_heads, cfg.head_dim, cfg.hidden_dim) == (
        "learned", "layernorm", "gelu", 3, 8, 96)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"n_kv_heads": 3}, r"n_kv_heads \(3\) must divide n_heads \(4\)"),
        ({"head_dim": 7}, "must be even for rotary"),
        ({"norm": "batchnorm"}, "norm must be one of layernorm, rmsnorm"),
        ({"rope_scaling": {"rope_type": "yarn"}}, "rope_scaling must be null or"),
        ({"rope_scaling": {**LLAMA3, "factor": 0}}, "rope_scaling.factor must be a positive number"),
    ],
)
def test_bad_llama_fields_are_named(fields: dict, message: str) -> None:
    from scratchllm.errors import ScratchLLMError

    with pytest.raises(ScratchLLMError, match=message):
        llama(**fields)


def test_training_step_reduces_loss() -> None:
    torch.manual_seed(8)
    model = GPTModel(llama(drop_rate=0.1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randint(0, 97, (4, 17))
    losses = []
    for _ in range(10):
        logits = model(x[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0


# ---------------------------------------------------------------------------------------- decoding speed-ups
@pytest.mark.parametrize("scaling", [None, LLAMA3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_table_equals_recomputed_angles(scaling, dtype) -> None:
    """Without gradients RoPE looks its cos/sin up in a cached table (grown past its first 256 rows here);
    the values are those computed from the positions (to float32's last bit), for [T] and [B, T] positions."""
    rope = RotaryEmbedding(16, 500.0, scaling)
    atol = 1e-6 if dtype == torch.float32 else 2**-8
    for positions in (torch.arange(3, 40), torch.tensor([[0, 0, 1, 2], [5, 6, 7, 8]]), torch.tensor([700])):
        computed = rope(positions, dtype)  # gradients on: recomputed
        with torch.inference_mode():
            cached = rope(positions, dtype)
        assert cached[0].shape == computed[0].shape and cached[0].dtype == dtype
        assert torch.allclose(cached[0], computed[0], rtol=0, atol=atol)
        assert torch.allclose(cached[1], computed[1], rtol=0, atol=atol)
    assert rope._tables[(torch.device("cpu"), dtype)][0].shape == (1024, 16)
    # A table built under inference_mode is an ordinary tensor: training can still use the module afterwards.
    x = torch.randn(1, 2, 4, 16, requires_grad=True)
    apply_rope(x, *rope(torch.arange(4))).sum().backward()
    assert x.grad is not None
    assert not any("rope" in key for key in GPTModel(llama()).state_dict())


def test_rmsnorm_bf16_follows_the_llama_reference() -> None:
    """bf16: the statistic in float32, cast back, then the gain (the Llama reference order), within 1 ulp."""
    torch.manual_seed(11)
    norm = RMSNorm(64, eps=1e-5)
    with torch.no_grad():
        norm.weight.normal_()
    norm = norm.bfloat16()
    x = (torch.randn(3, 64) * 3).bfloat16()
    x32 = x.float()
    expected = norm.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-5)).bfloat16()
    assert torch.allclose(norm(x).float(), expected.float(), rtol=2**-7, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decoding_optimisations_keep_greedy_tokens(dtype) -> None:
    """The cached fast path (RoPE table, fused RMSNorm, decoding layout) gives the tokens that recomputing
    every position without a cache gives."""
    torch.manual_seed(12)
    model = optimize_for_decoding(GPTModel(llama(context_length=64)).to(dtype))
    prompt = torch.randint(0, 97, (2, 6))
    cached = generate(model, prompt, 20, use_cache=True)
    assert cached == generate(model, prompt, 20, use_cache=False)
