"""Rotary position embeddings (RoPE; Su et al., 2021), as the Llama family uses them.

GPT-2 *adds* a learned vector per position to the token embedding. RoPE instead *rotates* queries and keys:
the head's ``head_dim`` numbers are taken as ``head_dim / 2`` pairs, and pair ``i`` of the vector at position
``m`` is turned by the angle ``m * theta_i``, with frequencies ``theta_i = base^(-2i / head_dim)`` falling from
1 radian per position to almost nothing. A rotation keeps lengths, and the dot product of a query rotated by
``m * theta`` with a key rotated by ``n * theta`` depends only on ``(m - n) * theta``: attention scores see
*relative* positions, and no table limits the length.

Two implementations of the same map live here:

* :func:`apply_rope_complex` is the textbook one: each pair is a complex number ``a + ib`` multiplied by
  ``e^{i m theta}``.
* :func:`apply_rope` is the fast one, in Hugging Face's "rotate half" layout used by every Llama-family
  checkpoint: pair ``i`` is ``(x[i], x[i + head_dim/2])`` (not ``(x[2i], x[2i+1])``), so the rotation is
  ``x * cos + rotate_half(x) * sin`` on whole tensors. The tests prove the two agree once the layouts are matched.

Llama 3.1+ stretches the low frequencies for long contexts (``rope_scaling`` of type ``llama3``):
:func:`rope_frequencies` applies it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn


def rope_frequencies(
    head_dim: int, base: float = 10000.0, scaling: dict[str, Any] | None = None, device: Any = None
) -> Tensor:
    """The ``head_dim / 2`` rotation frequencies ``base^(-2i / head_dim)`` (radians per position), float32.

    With Llama 3's ``scaling``, wavelengths longer than ``original_max_position_embeddings / low_freq_factor``
    are slowed down by ``factor`` (the model then sees ``factor`` times more positions before they wrap),
    wavelengths shorter than ``original / high_freq_factor`` are kept (they carry local order), and those
    between are blended smoothly.
    """
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    inv_freq = 1.0 / (base**exponents)
    if scaling is None:
        return inv_freq
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    original = scaling["original_max_position_embeddings"]
    wavelength = 2 * math.pi / inv_freq
    smooth = (original / wavelength - low) / (high - low)
    blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    scaled = torch.where(wavelength > original / low, inv_freq / factor, inv_freq)
    between = (wavelength >= original / high) & (wavelength <= original / low)
    return torch.where(between, blended, scaled)


def rotate_half(x: Tensor) -> Tensor:
    """``[x1, x2] -> [-x2, x1]`` on the last dimension: the 90-degree turn of every pair ``(x1[i], x2[i])``."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` ``[..., T, head_dim]`` by the angles whose cosines/sines are ``cos``/``sin`` (same last dims).

    Rotating the pair ``(a, b)`` by ``phi`` gives ``(a cos phi - b sin phi, b cos phi + a sin phi)``; with the
    pairs split across the two halves, that is exactly ``x * cos + rotate_half(x) * sin``.
    """
    return torch.addcmul(x * cos, rotate_half(x), sin)


def apply_rope_complex(x: Tensor, positions: Tensor, inv_freq: Tensor) -> Tensor:
    """The textbook RoPE: pair ``(x[2i], x[2i+1])`` as ``a + ib``, times ``e^{i * position * inv_freq[i]}``.

    ``x`` is ``[..., T, head_dim]`` with *interleaved* pairs (the RoPE paper's and Meta's original layout),
    ``positions`` ``[T]``. Computed in float64 complex numbers for clarity, returned in ``x``'s dtype.
    """
    pairs = torch.view_as_complex(x.double().reshape(*x.shape[:-1], -1, 2).contiguous())
    angles = positions.double()[:, None] * inv_freq.double()[None, :]  # [T, head_dim/2]
    rotated = pairs * torch.polar(torch.ones_like(angles), angles)
    return torch.view_as_real(rotated).flatten(-2).to(x.dtype)


class RotaryEmbedding(nn.Module):
    """Cosines and sines of the rotation angles for given positions, shared by every attention layer.

    Nothing is stored in the model: the frequencies are a function of the config, so the module has no state
    to load, move or initialise, and a model built on the meta device (or sharded by FSDP) needs no special
    care. When gradients are off (generation, evaluation), the ``cos``/``sin`` rows are looked up in a table
    built once per device and dtype, grown by doubling: a decoding step then costs one lookup instead of the
    dozen small kernels that recompute them, with the same values (up to the last bit of a vectorised
    ``cos``, which may differ from the scalar one used for a few trailing elements). Training recomputes
    them (a negligible cost next to a training step), which keeps its forward free of host synchronisation
    and of state that ``torch.compile`` would have to guard.
    """

    def __init__(self, head_dim: int, base: float = 10000.0, scaling: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.base = base
        self.scaling = scaling
        self._tables: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}

    def forward(self, positions: Tensor, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """``positions`` ``[T]`` or ``[B, T]`` -> ``cos``, ``sin`` ``[1 or B, 1, T, head_dim]`` (1: any head)."""
        if torch.is_grad_enabled() or torch.compiler.is_compiling() or positions.numel() == 0:
            cos, sin = self.cos_sin(positions, dtype)
        else:
            cos, sin = self.table(int(positions.max()) + 1, positions.device, dtype)
            cos, sin = cos[positions], sin[positions]
        if cos.dim() == 2:
            cos, sin = cos[None], sin[None]
        return cos[:, None], sin[:, None]

    def cos_sin(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """``cos``, ``sin`` ``[..., T, head_dim]`` of the angles of ``positions``, computed in float32."""
        inv_freq = rope_frequencies(self.head_dim, self.base, self.scaling, device=positions.device)
        angles = positions.float()[..., None] * inv_freq  # [..., T, head_dim/2]
        angles = torch.cat((angles, angles), dim=-1)  # rotate-half layout: pair i is (i, i + head_dim/2)
        return angles.cos().to(dtype), angles.sin().to(dtype)

    def table(self, length: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """``cos``, ``sin`` ``[>= length, head_dim]`` for positions ``0, 1, ...``, cached per device and dtype."""
        key = (device, dtype)
        cached = self._tables.get(key)
        if cached is None or cached[0].shape[0] < length:
            size = max(256, 1 << (length - 1).bit_length())
            # Built as ordinary tensors even inside inference_mode, so that later use anywhere is allowed.
            with torch.inference_mode(False), torch.no_grad():
                cached = self.cos_sin(torch.arange(size, device=device), dtype)
            self._tables[key] = cached
        return cached
