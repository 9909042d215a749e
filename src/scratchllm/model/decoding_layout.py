"""Weight memory layout for decoding on CPU: same matrices, same shapes, faster matrix-vector products.

An ``nn.Linear`` keeps its weight as ``[out, in]`` rows (row-major), and ``y = x @ W.T``. In training ``x`` has
thousands of rows and that layout is what the matrix-multiply kernels like best. When decoding with a KV
cache, ``x`` is one token's vector, so every layer is a matrix-*vector* product whose cost is reading the
whole weight matrix from memory once per token: decoding is bound by memory bandwidth.

On CPU, MKL streams a matrix-vector product much faster when ``W.T`` is the contiguous one, i.e. when the
weight is stored column-major (measured on 2 AVX2 cores: GPT-2's 50257 x 768 LM head 10.9 -> 18.9 GB/s,
gpt2-small decoding 16.9 -> 20.8 tokens/s; see ``benchmarks/bench_generation.py``); Hugging Face's GPT-2
keeps its ``Conv1D`` weights that way. That holds for fp32 only: in bf16 the row-major layout is the fast one,
and :func:`optimize_for_decoding` knows it. Training, on the other hand, runs about 15 % slower with
column-major weights here, which is why this is a switch applied when a model is loaded for inference and not
the model's own layout.

The switch changes strides only: ``weight.shape``, values, parameter objects, ``state_dict`` keys and tied
weights stay as they are, and saving writes ordinary row-major safetensors.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Layout = Literal["row", "column"]


def weight_layout(weight: torch.Tensor) -> Layout | None:
    """``"row"`` for a contiguous ``[out, in]`` matrix, ``"column"`` when its transpose is contiguous."""
    if weight.dim() != 2:
        return None
    if weight.is_contiguous():
        return "row"
    if weight.t().is_contiguous():
        return "column"
    return None


def set_weight_layout(model: nn.Module, layout: Layout) -> nn.Module:
    """Store the weight of every ``nn.Linear`` and ``nn.Embedding`` in ``model`` row- or column-major, in place.

    Embeddings are included because GPT-2 ties the token embedding to the LM head (one tensor serves both);
    an embedding lookup reads one row per token, which either layout serves cheaply. Returns ``model``.
    """
    if layout not in ("row", "column"):
        raise ValueError(f"layout must be 'row' or 'column', got {layout!r}")
    for module in model.modules():
        # A tied matrix is met twice; the second time it already has the layout and is skipped.
        if not isinstance(module, (nn.Linear, nn.Embedding)) or weight_layout(module.weight) == layout:
            continue
        data = module.weight.data
        # Same Parameter object, new storage: optimizers and tied references stay valid.
        module.weight.data = data.contiguous() if layout == "row" else data.t().contiguous().t()
    return model


def optimize_for_decoding(model: nn.Module) -> nn.Module:
    """Prepare a model that will only generate: eval mode, and column-major weights for fp32 on CPU.

    Only MKL's fp32 kernels prefer column-major; PyTorch's bf16 CPU matrix-vector kernel is about 3x *slower*
    with it, and GPUs run both layouts at full speed, so those get (or get back) row-major. Returns ``model``.
    """
    model.eval()
    weight = next(model.parameters())
    fp32_cpu = weight.device.type == "cpu" and weight.dtype == torch.float32
    return set_weight_layout(model, "column" if fp32_cpu else "row")
