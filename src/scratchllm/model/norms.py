"""Normalisation layers: GPT-2's LayerNorm and the Llama family's RMSNorm.

Both rescale each token's vector to a steady size so deep stacks train; they differ in what they remove.
LayerNorm centres (subtracts the mean) and then scales, with a learned gain and bias. RMSNorm (Zhang &
Sennrich, 2019) skips the centring and the bias: it divides by the root mean square only, which works as well
and costs less.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LayerNorm(nn.Module):
    """Normalise each token's vector to mean 0, variance 1, then scale and shift with learned ``weight``/``bias``.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` (biased variance, as GPT-2). ``bias=False`` drops the
    shift. :func:`torch.nn.functional.layer_norm` computes it in one kernel.
    """

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    """``y = x / sqrt(mean(x^2) + eps) * weight``: scale only, no centring, no bias.

    The statistic is computed in float32 whatever the input dtype (in bf16 the mean of squares loses too many
    digits), and the result is cast back before the gain is applied, as the Llama reference code does, so bf16
    models give the same numbers as theirs. :func:`torch.nn.functional.rms_norm` does the arithmetic in one
    call instead of six (it matters when decoding, where 61 norms run per token on a single vector).
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        return self.weight * F.rms_norm(x.float(), self.weight.shape, eps=self.eps).to(x.dtype)


def make_norm(kind: str, dim: int, eps: float, bias: bool = True) -> nn.Module:
    """The norm a config names: ``layernorm`` (with or without bias) or ``rmsnorm``."""
    if kind == "rmsnorm":
        return RMSNorm(dim, eps)
    if kind == "layernorm":
        return LayerNorm(dim, eps, bias=bias)
    raise ValueError(f"unknown norm {kind!r}; expected layernorm or rmsnorm")
