"""8-bit weight-only quantization for decoding: fewer bytes per token, so more tokens per second.

Generating one token with a KV cache multiplies one vector by every weight matrix of the model. Each weight is
used for a single multiply-add, so the time goes into *reading* the weights from memory, not into arithmetic:
decoding speed is at most ``memory bandwidth / bytes of weights``. SmolLM2-135M reads 540 MB per token in fp32
and 270 MB in bf16; storing each weight in one byte (int8) halves that again, to about 135 MB.

Weight-only means only the stored matrices shrink: activations stay in bf16, and each output row ``j`` of a
linear layer keeps one scale, ``W[j] ~= scale[j] * q[j]`` with ``q`` in ``[-127, 127]`` and ``scale[j] =
max|W[j]| / 127`` (symmetric, per output channel). The product ``x @ W.T`` is then ``(x @ q.T) * scale``:
our matrix-vector kernel (:mod:`scratchllm.model.matvec`; one token) or
:func:`torch.ops.aten._weight_int8pack_mm` (a prompt) computes it in one pass, converting the int8 weights on
the fly and never writing a dequantized copy. The rounding error of a weight is at most half a step, ``scale / 2``,
about 0.4 % of the row's largest weight, which moves logits far less than the differences that decide a
greedy choice (the tests bound it).

:func:`quantize_for_decoding` converts a loaded model in place; it is for generation only (the int8 weights
have no gradients), and it happens after loading, so checkpoints stay in their own format.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scratchllm.config import WEIGHT_FORMATS, WeightFormat
from scratchllm.errors import ScratchLLMError
from scratchllm.model.decoding_layout import optimize_for_decoding, replace_linears
from scratchllm.model.matvec import MAX_ROWS, matvec


def quantize_int8(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric per-output-channel int8: ``weight [out, in] -> (q int8 [out, in], scale float32 [out])``.

    ``q * scale[:, None]`` is the dequantized matrix; an all-zero row gets scale 1 (any scale is exact there).
    """
    w = weight.detach().float()
    scale = w.abs().amax(dim=1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


class Int8Linear(nn.Module):
    """A linear layer with int8 weights and one bf16 scale per output: ``y = (x @ q.T) * scale + bias``.

    Inputs of any float dtype are computed in bf16 (the dtype the CPU int8 kernel takes) and the result is
    returned in the input's dtype. ``weight`` and ``scale`` are buffers, not parameters: nothing here trains.
    With ``kernel`` on (:func:`~scratchllm.model.matvec.use_matvec` sets it), products of up to
    :data:`~scratchllm.model.matvec.MAX_ROWS` rows go through the matrix-vector kernel, which streams the
    int8 rows and sums in fp32; longer ones (a prompt) through PyTorch's int8 matrix kernel.
    """

    def __init__(self, weight: Tensor, scale: Tensor, bias: Tensor | None = None) -> None:
        super().__init__()
        self.in_features = weight.shape[1]
        self.out_features = weight.shape[0]
        self.register_buffer("weight", weight.to(torch.int8).contiguous())
        self.register_buffer("scale", scale.to(torch.bfloat16).contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().to(torch.bfloat16))
        self.kernel = False

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        """Quantize an ``nn.Linear`` (its weight is only read)."""
        q, scale = quantize_int8(linear.weight)
        return cls(q.to(linear.weight.device), scale.to(linear.weight.device), linear.bias)

    def dequantized(self) -> Tensor:
        """The float32 matrix this layer multiplies by, ``q * scale`` (for tests and inspection)."""
        return self.weight.float() * self.scale.float()[:, None]

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)
        if self.kernel and rows.shape[0] <= MAX_ROWS:
            y = matvec(rows, self.weight, self.scale)
        elif self.weight.device.type == "cpu":
            y = torch.ops.aten._weight_int8pack_mm(rows, self.weight, self.scale)
        else:  # GPUs: dequantize on the fly (their bf16 matmuls are fast; fused kernels belong to torchao)
            y = F.linear(rows, self.weight.to(torch.bfloat16)) * self.scale
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weight-only"


def quantize_for_decoding(model: nn.Module, weight_format: WeightFormat = "int8") -> nn.Module:
    """Convert ``model`` in place for generation in ``weight_format``, and return it.

    ``"fp32"``/``"bf16"`` cast the model; ``"int8"`` casts it to bf16 (activations, norms, embedding and KV
    cache) and replaces every ``nn.Linear`` by an :class:`Int8Linear`. A tied LM head is quantized on its own:
    the embedding keeps its bf16 table (a lookup reads one row per token; the head reads all of them).
    Finishes with :func:`~scratchllm.model.decoding_layout.optimize_for_decoding` (eval mode; on CPU, fp32 and
    bf16 linears through the matrix-vector kernel; the fastest layout of the remaining float weights).
    """
    if weight_format not in WEIGHT_FORMATS:
        raise ScratchLLMError(f"unknown weight format {weight_format!r}; expected one of {', '.join(WEIGHT_FORMATS)}")
    model.to(torch.float32 if weight_format == "fp32" else torch.bfloat16)
    if weight_format == "int8":
        replace_linears(model, Int8Linear.from_linear)
    return optimize_for_decoding(model, kernel=True)


def prepare_for_decoding(model: nn.Module, weight_format: WeightFormat | None = None, *, pack: bool = False) -> nn.Module:
    """``model`` ready for generation, in place: in ``weight_format`` (``None``: as loaded), fastest layout.

    With ``pack``, fp32 linears are handed to oneDNN (faster for a server's batches of more than 8 rows); every
    float linear left goes through the matrix-vector kernel (:mod:`scratchllm.model.matvec`; up to 8 rows at a
    time). bf16 and int8 go through :func:`quantize_for_decoding`. The one switch behind ``--weights`` of
    generate, chat and serve.
    """
    if weight_format in (None, "fp32"):
        return optimize_for_decoding(model.float() if weight_format else model, pack=pack, kernel=True)
    return quantize_for_decoding(model, weight_format)
