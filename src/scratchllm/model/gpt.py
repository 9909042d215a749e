"""A GPT-2-style decoder-only transformer.

Architecture (Radford et al., 2019), read top to bottom::

    idx [B, T] -> token embedding + learned position embedding -> dropout
               -> n_layers x TransformerBlock:
                      x = x + Dropout(MultiHeadAttention(LayerNorm(x)))     (pre-norm, causal, fused SDPA)
                      x = x + Dropout(FeedForward(LayerNorm(x)))            (Linear d->4d, GELU-tanh, 4d->d)
               -> final LayerNorm -> LM head (optionally tied to the token embedding) -> logits [B, T, V]

The shape comes from :class:`~scratchllm.config.ModelConfig`. The model knows nothing about files, devices
or distributed training; :mod:`scratchllm.weights` reads and writes it, :mod:`scratchllm.generation` samples
from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scratchllm.config import ModelConfig
from scratchllm.model.attention import KVCache, MultiHeadAttention


class LayerNorm(nn.Module):
    """Normalise each token's vector to mean 0, variance 1, then scale and shift with learned ``weight``/``bias``.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` (biased variance, as GPT-2). Keeping activations at a
    steady scale lets deep stacks train; :func:`torch.nn.functional.layer_norm` computes it in one kernel.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class GELU(nn.Module):
    """GELU with GPT-2's tanh approximation: ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.

    A smooth ReLU: slightly negative outputs for small negative inputs keep gradients flowing.
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, approximate="tanh")


class FeedForward(nn.Module):
    """Position-wise MLP: widen to ``4 * emb_dim``, GELU, project back. Where most parameters live."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.emb_dim, 4 * cfg.emb_dim)
        self.act = GELU()
        self.proj = nn.Linear(4 * cfg.emb_dim, cfg.emb_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.act(self.fc(x)))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: attention then feed-forward, each wrapped in a residual connection.

    Normalising *before* each sublayer (GPT-2) leaves the residual path an identity, so gradients reach the
    first layers undiminished.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm1 = LayerNorm(cfg.emb_dim, cfg.layer_norm_eps)
        self.att = MultiHeadAttention(
            cfg.emb_dim,
            cfg.emb_dim,
            cfg.n_heads,
            dropout=cfg.drop_rate,
            qkv_bias=cfg.qkv_bias,
            use_sdpa=True,
        )
        self.norm2 = LayerNorm(cfg.emb_dim, cfg.layer_norm_eps)
        self.ff = FeedForward(cfg)
        self.drop = nn.Dropout(cfg.drop_rate)

    def forward(
        self, x: Tensor, kv_cache: KVCache | None = None, layer: int = 0, pad: Tensor | None = None
    ) -> Tensor:
        x = x + self.drop(self.att(self.norm1(x), kv_cache, layer, pad))
        x = x + self.drop(self.ff(self.norm2(x)))
        return x


class GPTModel(nn.Module):
    """GPT-2-style language model: ``forward(idx) -> logits``.

    Parameter names (``tok_emb``, ``pos_emb``, ``blocks.N.{norm1,att.qkv,att.out_proj,norm2,ff.fc,ff.proj}``,
    ``final_norm``, ``lm_head``) are what checkpoints store; :mod:`scratchllm.weights` maps them to and from
    Hugging Face's GPT-2 names.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.emb_dim)
        self.pos_emb = nn.Embedding(config.context_length, config.emb_dim)
        self.drop = nn.Dropout(config.drop_rate)
        self.blocks = nn.ModuleList(TransformerBlock(config) for _ in range(config.n_layers))
        self.final_norm = LayerNorm(config.emb_dim, config.layer_norm_eps)
        self.lm_head = nn.Linear(config.emb_dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            # One matrix maps ids -> vectors and vectors -> scores; saves vocab_size * emb_dim parameters.
            self.lm_head.weight = self.tok_emb.weight
        self.reset_parameters()

    # ------------------------------------------------------------------------------------ init
    def reset_parameters(self) -> None:
        """GPT-2 initialisation: N(0, 0.02) for weights, zeros for biases, and residual output projections
        scaled by ``1/sqrt(2 * n_layers)`` so the residual stream's variance does not grow with depth (each
        block adds two branches to it)."""
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = residual_std if name.endswith(("att.out_proj", "ff.proj")) else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------------------------ forward
    def forward(
        self, idx: Tensor, kv_cache: KVCache | None = None, pad: Tensor | None = None, last_only: bool = False
    ) -> Tensor:
        """Logits ``[B, T, vocab_size]`` for token ids ``idx`` ``[B, T]``.

        Args:
            idx: token ids, at most ``context_length`` per row (including what ``kv_cache`` already holds).
            kv_cache: when given, ``idx`` continues the cached sequence: its keys/values are appended and its
                positions start at ``kv_cache.length``.
            pad: number of left-padding tokens per row (``[B]``), for batches of prompts of different lengths
                without a cache; padded slots are never attended to and each row's positions start at 0 on its
                first real token. With a cache, the cache's ``pad`` is used instead.
            last_only: return logits for the last position only (``[B, 1, V]``): generation needs nothing
                else, and the LM head is a large matmul.
        """
        B, T = idx.shape
        start = kv_cache.length if kv_cache is not None else 0
        if start + T > self.config.context_length:
            raise ValueError(
                f"sequence of {start + T} tokens exceeds context_length {self.config.context_length}"
            )
        if kv_cache is not None:
            pad = kv_cache.pad
        positions = torch.arange(start, start + T, device=idx.device)
        if pad is not None:
            positions = (positions[None, :] - pad[:, None]).clamp_(min=0)  # [B, T]
        x = self.drop(self.tok_emb(idx) + self.pos_emb(positions))
        for i, block in enumerate(self.blocks):
            x = block(x, kv_cache, i, pad)
        if kv_cache is not None:
            kv_cache.length += T
        if last_only:
            x = x[:, -1:]
        return self.lm_head(self.final_norm(x))

    def new_kv_cache(
        self,
        batch_size: int,
        max_len: int | None = None,
        pad: Tensor | None = None,
        dtype: torch.dtype | None = None,
    ) -> KVCache:
        """A cache sized for this model (``max_len`` defaults to ``context_length``), on its device and dtype."""
        weight = self.tok_emb.weight
        cfg = self.config
        return KVCache(
            cfg.n_layers,
            batch_size,
            cfg.n_heads,
            min(max_len or cfg.context_length, cfg.context_length),
            cfg.head_dim,
            device=weight.device,
            dtype=dtype or weight.dtype,
            pad=pad,
        )

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Unique parameters (a tied matrix counts once); optionally without the position embedding."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
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
