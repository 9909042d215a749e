"""One decoder-only transformer for GPT-2 and the Llama family (Llama 3, SmolLM2, Qwen2/2.5, Qwen3).

Read top to bottom (pieces in brackets are chosen by :class:`~scratchllm.config.ModelConfig`)::

    idx [B, T] -> token embedding (+ learned position embedding if pos="learned") -> dropout
               -> n_layers x TransformerBlock:
                      x = x + Dropout(MultiHeadAttention(Norm(x)))     (pre-norm, causal, fused SDPA;
                                                                         RoPE on q, k if pos="rope"; GQA)
                      x = x + Dropout(MLP(Norm(x)))                   [gelu: d->4d, GELU, ->d |
                                                                        swiglu: down(silu(gate) * up)]
               -> final Norm [layernorm | rmsnorm] -> LM head (optionally tied to the embedding) -> logits

GPT-2 (Radford et al., 2019) is the default; "Llama is GPT-2 with four changes": rotary instead of learned
positions, RMSNorm instead of LayerNorm, SwiGLU instead of the GELU MLP, and grouped-query attention, plus no
biases. Each change is one small named module; the block and the model are the same code for both.

The model knows nothing about files, devices or distributed training; :mod:`scratchllm.weights` reads and
writes it, :mod:`scratchllm.generation` samples from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scratchllm.config import ModelConfig, check_dropout
from scratchllm.model.attention import KVCache, MultiHeadAttention, Packing, StaticKVCache
from scratchllm.model.norms import LayerNorm, RMSNorm, make_norm
from scratchllm.model.rope import RotaryEmbedding

__all__ = [
    "GELU",
    "FeedForward",
    "GPTModel",
    "LayerNorm",
    "ModelSummary",
    "RMSNorm",
    "SwiGLU",
    "TransformerBlock",
    "model_summary",
]


class GELU(nn.Module):
    """GELU with GPT-2's tanh approximation: ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.

    A smooth ReLU: slightly negative outputs for small negative inputs keep gradients flowing.
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, approximate="tanh")


class FeedForward(nn.Module):
    """GPT-2's position-wise MLP: widen to ``hidden_dim`` (4 x emb_dim), GELU, project back."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.emb_dim, cfg.hidden_dim, bias=cfg.bias)
        self.act = GELU()
        self.proj = nn.Linear(cfg.hidden_dim, cfg.emb_dim, bias=cfg.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.act(self.fc(x)))


class SwiGLU(nn.Module):
    """The Llama family's gated MLP (Shazeer, 2020): ``down(silu(gate(x)) * up(x))``.

    Two projections widen ``x``; one, through SiLU, decides how much of the other passes (a learned, smooth
    gate per hidden unit). With three matrices instead of two, ``hidden_dim`` is usually about ``8/3 * emb_dim``
    to keep the parameter count of GPT-2's MLP. ``fc`` computes gate and up in one matrix multiply (rows: all
    gate units, then all up units; Hugging Face's ``gate_proj`` and ``up_proj``); ``proj`` is ``down_proj``.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.emb_dim, 2 * cfg.hidden_dim, bias=cfg.bias)
        self.proj = nn.Linear(cfg.hidden_dim, cfg.emb_dim, bias=cfg.bias)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.fc(x).chunk(2, dim=-1)
        return self.proj(F.silu(gate) * up)


class TransformerBlock(nn.Module):
    """Pre-norm block: attention then feed-forward, each wrapped in a residual connection.

    Normalising *before* each sublayer (GPT-2 and Llama alike) leaves the residual path an identity, so
    gradients reach the first layers undiminished.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm1 = make_norm(cfg.norm, cfg.emb_dim, cfg.norm_eps, cfg.bias)
        self.att = MultiHeadAttention(
            cfg.emb_dim,
            cfg.emb_dim,
            cfg.n_heads,
            dropout=cfg.drop_rate,
            qkv_bias=cfg.qkv_bias,
            use_sdpa=True,
            num_kv_heads=cfg.n_kv_heads,
            head_dim=cfg.head_dim,
            out_bias=cfg.bias,
            qk_norm=cfg.qk_norm,
            norm_eps=cfg.norm_eps,
        )
        self.norm2 = make_norm(cfg.norm, cfg.emb_dim, cfg.norm_eps, cfg.bias)
        self.ff = SwiGLU(cfg) if cfg.mlp == "swiglu" else FeedForward(cfg)
        self.drop = nn.Dropout(cfg.drop_rate)

    def forward(
        self, x: Tensor, kv_cache: KVCache | StaticKVCache | None, layer: int, pad: Tensor | None,
        rope: tuple[Tensor, Tensor] | None, packing: Packing | None = None,
    ) -> Tensor:  # fmt: skip
        """One pre-norm block; the model passes every argument (see :meth:`MultiHeadAttention.forward`)."""
        x = x + self.drop(self.att(self.norm1(x), kv_cache, layer, pad, rope, packing))
        x = x + self.drop(self.ff(self.norm2(x)))
        return x


class GPTModel(nn.Module):
    """Decoder-only language model (GPT-2 or Llama family, per the config): ``forward(idx) -> logits``.

    Parameter names (``tok_emb``, ``pos_emb`` (learned positions only), ``blocks.N.{norm1, att.qkv,
    att.q_norm, att.k_norm, att.out_proj, norm2, ff.fc, ff.proj}``, ``final_norm``, ``lm_head``) are what
    checkpoints store; :mod:`scratchllm.weights` maps them to and from Hugging Face's names.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.emb_dim)
        if config.pos == "learned":
            self.pos_emb = nn.Embedding(config.context_length, config.emb_dim)
            self.rope = None
        else:
            self.pos_emb = None
            self.rope = RotaryEmbedding(config.head_dim, config.rope_theta, config.rope_scaling)
        self.drop = nn.Dropout(config.drop_rate)
        self.blocks = nn.ModuleList(TransformerBlock(config) for _ in range(config.n_layers))
        self.final_norm = make_norm(config.norm, config.emb_dim, config.norm_eps, config.bias)
        self.lm_head = nn.Linear(config.emb_dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            # One matrix maps ids -> vectors and vectors -> scores; saves vocab_size * emb_dim parameters.
            self.lm_head.weight = self.tok_emb.weight
        self.reset_parameters()

    # ------------------------------------------------------------------------------------ init
    def reset_parameters(self) -> None:
        """GPT-2 initialisation (Llama uses the same): N(0, 0.02) for weights, zeros for biases, ones for norm
        gains, and residual output projections scaled by ``1/sqrt(2 * n_layers)`` so the residual stream's
        variance does not grow with depth (each block adds two branches to it)."""
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = residual_std if name.endswith(("att.out_proj", "ff.proj")) else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, (LayerNorm, RMSNorm)):
                nn.init.ones_(module.weight)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------------------------ forward
    def forward(
        self,
        idx: Tensor,
        kv_cache: KVCache | StaticKVCache | None = None,
        pad: Tensor | None = None,
        last_only: bool = False,
        logits_at: Tensor | None = None,
        packing: Packing | None = None,
    ) -> Tensor:
        """Logits ``[B, T, vocab_size]`` for token ids ``idx`` ``[B, T]``.

        Args:
            idx: token ids, at most ``context_length`` per row (including what ``kv_cache`` already holds).
            kv_cache: when given, ``idx`` continues the cached sequence: its keys/values are appended and its
                positions start at ``kv_cache.length`` (at each row's ``kv_cache.lengths[b]`` when the cache is
                a pool of independent sequences; see :meth:`KVCache.rows`).
            pad: number of left-padding tokens per row (``[B]``), for batches of prompts of different lengths
                without a cache; padded slots are never attended to and each row's positions start at 0 on its
                first real token. With a cache, the cache's ``pad`` is used instead.
            last_only: return logits for the last position only (``[B, 1, V]``): generation needs nothing
                else, and the LM head is a large matmul.
            logits_at: like ``last_only``, but at position ``logits_at[b]`` of row ``b`` (``[B]`` indices
                into ``T``): the last real token of right-padded rows, as a server's batched prefill has.
            packing: ``idx`` is ``[1, N]``, the rows of a right-padded batch back to back without their padding
                (see :class:`~scratchllm.model.attention.Packing`); logits are ``[1, N, V]`` (at each row's last
                token only with ``last_only``: ``[1, B, V]``). Per-token layers skip the padding.
        """
        B, T = (packing.batch, packing.width) if packing is not None else idx.shape
        if kv_cache is not None and kv_cache.lengths is not None:  # a pool of sequences, each at its own length
            positions = kv_cache.lengths[:, None] + torch.arange(T, device=idx.device)  # [B, T]
            end = int(kv_cache.lengths.max()) + T
        else:
            start, end = 0, T
            if kv_cache is not None and kv_cache.static:  # fill in a tensor, always max_len keys: nothing to sync
                start, end, pad = kv_cache.position, kv_cache.max_len, kv_cache.pad
            elif kv_cache is not None:
                start, end, pad = kv_cache.length, kv_cache.length + T, kv_cache.pad
            positions = start + torch.arange(T, device=idx.device)
            if pad is not None:
                positions = (positions[None, :] - pad[:, None]).clamp_(min=0)  # [B, T]
        if packing is not None and pad is not None:
            raise ValueError("packing holds right-padded rows; it cannot be combined with left padding (pad)")
        if end > self.config.context_length:
            raise ValueError(f"sequence of {end} tokens exceeds context_length {self.config.context_length}")
        x = self.tok_emb(idx)
        rope = None
        if self.pos_emb is not None:
            if packing is not None:
                positions = packing.pack(positions.expand(B, T))
            x = x + self.pos_emb(positions)  # GPT-2: where a token is, added to what it is
        else:
            rope = self.rope(positions, x.dtype)  # Llama: positions rotate q and k inside attention
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, kv_cache, i, pad, rope, packing)
        if kv_cache is not None:
            kv_cache.advance(T)
        if packing is not None and last_only:
            x = x[:, packing.last]
        elif last_only:
            x = x[:, -1:]
        elif logits_at is not None:
            x = x[torch.arange(B, device=x.device), logits_at][:, None]
        return self.lm_head(self.final_norm(x))

    def new_kv_cache(
        self,
        batch_size: int,
        max_len: int | None = None,
        pad: Tensor | None = None,
        dtype: torch.dtype | None = None,
        static: bool = False,
    ) -> KVCache | StaticKVCache:
        """A cache sized for this model (``max_len`` defaults to ``context_length``), on its device and dtype;
        a :class:`~scratchllm.model.attention.StaticKVCache` with ``static`` (for compiled decoding steps)."""
        weight = self.tok_emb.weight
        cfg = self.config
        return (StaticKVCache if static else KVCache)(
            cfg.n_layers,
            batch_size,
            cfg.n_kv_heads,  # grouped-query attention caches only the key/value heads
            min(max_len or cfg.context_length, cfg.context_length),
            cfg.head_dim,
            device=weight.device,
            dtype=dtype or weight.dtype,
            pad=pad,
        )

    def set_dropout(self, rate: float) -> None:
        """Set the dropout rate of every layer and of the config.

        Published models ship with ``drop_rate`` 0 (what inference needs), but finetuning a small labelled set
        often generalises better with some; eval mode still turns it off.
        """
        rate = check_dropout("dropout", rate)
        self.config.drop_rate = rate
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.p = rate
            elif isinstance(module, MultiHeadAttention):
                module.dropout = rate

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Unique parameters (a tied matrix counts once); optionally without the position embedding."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings and self.pos_emb is not None:
            n -= self.pos_emb.weight.numel()
        return n


# ---------------------------------------------------------------------------------------- summary
@dataclass
class ModelSummary:
    """Parameter counts and the memory they need (bytes), as reported by :func:`model_summary`."""

    parameters: int
    trainable: int
    embedding: int
    non_embedding: int
    bytes_fp32: int
    bytes_bf16: int
    training_bytes_fp32: int
    training_bytes_bf16: int

    def __str__(self) -> str:
        gib = 1024**3
        return "\n".join(
            [
                f"parameters:        {self.parameters:,} (non-embedding {self.non_embedding:,})",
                f"weights fp32:      {self.bytes_fp32 / gib:.2f} GiB",
                f"weights bf16:      {self.bytes_bf16 / gib:.2f} GiB",
                f"training fp32:     {self.training_bytes_fp32 / gib:.2f} GiB (weights + grads + AdamW m, v)",
                f"training bf16:     {self.training_bytes_bf16 / gib:.2f} GiB (all four in bf16)",
            ]
        )


def model_summary(config_or_model: ModelConfig | nn.Module) -> ModelSummary:
    """Count parameters and estimate memory for a config (built on the meta device: no memory used) or a model.

    Training memory counts weights, gradients and AdamW's two moments: 4 copies, so 16 bytes/parameter in fp32
    and 8 in bf16. (Autocast mixed precision keeps fp32 weights and states, so it needs the fp32 figure.)
    Activations are not included: they depend on batch size and sequence length.
    """
    if isinstance(config_or_model, ModelConfig):
        with torch.device("meta"):
            model = GPTModel(config_or_model)
    else:
        model = config_or_model
    params = {id(p): p for p in model.parameters()}.values()
    n = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    embedding = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding))
    return ModelSummary(
        parameters=n,
        trainable=trainable,
        embedding=embedding,
        non_embedding=n - embedding,
        bytes_fp32=4 * n,
        bytes_bf16=2 * n,
        training_bytes_fp32=16 * n,
        training_bytes_bf16=8 * n,
    )
