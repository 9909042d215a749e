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

Going one step further, :class:`PackedLinear` hands each weight to oneDNN (PyTorch's CPU deep-learning
library) once, reordered into the blocked layout its matrix-multiply kernel reads fastest. That pays off most
when several sequences decode together (a server's batch: ``x`` has a few rows, where MKL's kernels for a
plain layout are at their worst): measured on 2 AVX2 cores for SmolLM2-135M's 49152 x 576 LM head, 8 rows
take 7.7 ms packed against 21 ms row-major and 30 ms column-major, and one row 4.1 ms against 5.4 ms
column-major; its other layers gain 1.2-2.5x at 4-16 rows (``benchmarks/bench_decode_linear.py``). A packed
weight is an opaque tensor, so :func:`pack_for_decoding` is for generation only: such a model cannot be trained
or saved (load it again for that).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

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
    an embedding lookup reads one row per token, which either layout serves cheaply. A weight held by a layer
    whose kernel reads it row-major (``row_major_weight``, e.g. :class:`~scratchllm.model.matvec.MatVecLinear`)
    is left as it is, also where a tied embedding shares it. Returns ``model``.
    """
    if layout not in ("row", "column"):
        raise ValueError(f"layout must be 'row' or 'column', got {layout!r}")
    pinned = {id(m.weight) for m in model.modules() if getattr(m, "row_major_weight", False)}
    for module in model.modules():
        # A tied matrix is met twice; the second time it already has the layout and is skipped.
        if (
            not isinstance(module, (nn.Linear, nn.Embedding))
            or id(module.weight) in pinned
            or weight_layout(module.weight) == layout
        ):
            continue
        data = module.weight.data
        # Same Parameter object, new storage: optimizers and tied references stay valid.
        module.weight.data = data.contiguous() if layout == "row" else data.t().contiguous().t()
    return model


def optimize_for_decoding(model: nn.Module, pack: bool = False, kernel: bool = False) -> nn.Module:
    """Prepare a model that will only generate: eval mode, and column-major weights for fp32 on CPU.

    Only MKL's fp32 kernels prefer column-major; PyTorch's bf16 CPU matrix-vector kernel is about 3x *slower*
    with it, and GPUs run both layouts at full speed, so those get (or get back) row-major. With ``pack``,
    fp32 linear layers on CPU are replaced by :class:`PackedLinear` where oneDNN can pack them (the model can
    then no longer be trained or saved). With ``kernel``, the float linears left on CPU go through our
    matrix-vector kernel (:func:`~scratchllm.model.matvec.use_matvec`), which reads row-major weights. Both
    come before the layout is set, so no weight is transposed for MKL only to be transposed back (for
    SmolLM2-135M that was about 1 s of loading). Returns ``model``.
    """
    model.eval()
    weight = next(model.parameters())
    fp32_cpu = weight.device.type == "cpu" and weight.dtype == torch.float32
    if pack and fp32_cpu and packing_available():
        pack_for_decoding(model)
    if kernel:
        from scratchllm.model.matvec import use_matvec  # it builds on this module

        use_matvec(model)
    return set_weight_layout(model, "column" if fp32_cpu else "row")  # what is left: embeddings, other layers


def packing_available() -> bool:
    """Whether this PyTorch build can pack fp32 linear weights with oneDNN (x86 and Arm CPU builds can)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


class PackedLinear(nn.Module):
    """An inference-only ``nn.Linear`` whose weight oneDNN has reordered into its own blocked layout.

    ``y = x @ W.T + b`` as before (same values up to the order of the float additions); the packed weight is
    a buffer in oneDNN's opaque format, read only by ``torch.ops.mkldnn._linear_pointwise``.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().contiguous()
        # No batch-size hint: one packing serves one row (decoding) and a batch of rows (serving) alike.
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(weight, None), persistent=False)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, oneDNN-packed fp32"


def pack_for_decoding(model: nn.Module) -> nn.Module:
    """Replace every fp32 ``nn.Linear`` on CPU in ``model`` by a :class:`PackedLinear`, in place; returns it.

    A tied LM head is packed on its own: the embedding keeps its table (a lookup reads one row of it).
    """
    if not packing_available():
        raise RuntimeError("this PyTorch build has no oneDNN weight packing (torch.backends.mkldnn)")

    def packable(m: nn.Linear) -> bool:
        return m.weight.device.type == "cpu" and m.weight.dtype == torch.float32

    return replace_linears(model, PackedLinear, packable)


def replace_linears(
    model: nn.Module, make: Callable[[nn.Linear], nn.Module], where: Callable[[nn.Linear], bool] | None = None
) -> nn.Module:
    """Swap every plain ``nn.Linear`` of ``model`` (for which ``where`` holds) for ``make(linear)``, in place."""
    linears = [
        (name, m) for name, m in model.named_modules() if type(m) is nn.Linear and (where is None or where(m))
    ]
    for name, linear in linears:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, make(linear))
    return model
