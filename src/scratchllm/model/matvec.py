"""A matrix-vector kernel for decoding on CPU: the same product as ``F.linear``, read at memory speed.

Decoding one token with a KV cache multiplies one activation row by every weight matrix (see
:mod:`scratchllm.model.quantize`): each weight is read once and used once, so a step can go no faster than
the weights stream from memory. PyTorch hands a one-row fp32 product to MKL's general matrix multiply,
which reads SmolLM2-135M's matrices at 11-19 GB/s on 2 AVX2 cores; a plain loop that streams each weight
row into an FMA accumulator reads the same matrices at 27-36 GB/s, in fp32, bf16 and int8
(``benchmarks/bench_decode_linear.py``). That loop is ``csrc/matvec.cpp``, about 150 lines of C++,
compiled on first use with the compiler ``torch.compile`` uses, and registered as a PyTorch operator
(``torch.ops.scratchllm_<hash of the source>.matvec``) so that compiled decoding steps can call it too.

:func:`matvec_reference` is the same product written out in PyTorch, for reading and for the tests.
:class:`MatVecLinear` is the drop-in ``nn.Linear`` that uses the kernel for a few rows (decoding) and
``F.linear`` for many (a prompt), sharing the linear's weight tensor (a tied LM head stays tied).

Where the kernel cannot run (not x86 with AVX2, no C++ compiler) :func:`matvec_available` says why, once, on
stderr, and decoding keeps PyTorch's own products: slower, never different.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SOURCE = Path(__file__).with_name("csrc") / "matvec.cpp"
MAX_ROWS = 8  # up to this many activation rows the kernel beats MKL (each weight tile is read once for all)
DISABLE_ENV = "SCRATCHLLM_NO_MATVEC"  # set to 1 to keep PyTorch's products (for comparisons)
_announced: list[str] = []  # the reason the kernel is off, once printed
_loaded: list[torch._ops.OpOverloadPacket] = []  # the operator, once built


def matvec_reference(x: Tensor, weight: Tensor, scale: Tensor | None = None) -> Tensor:
    """``y[m, n] = scale[n] * sum_k x[m, k] * weight[n, k]``: one dot product of ``x``'s row with each weight
    row, times the row's scale (int8 weights; no scale: 1).

    Accumulated in fp32 whatever the inputs (as the kernel does) and returned in ``x``'s dtype.
    """
    y = (x.float()[:, None, :] * weight.float()[None, :, :]).sum(-1)
    return (y if scale is None else y * scale.float()).to(x.dtype)


def _put_ninja_on_path() -> None:
    """PyTorch builds extensions with ninja, which it looks up on PATH; the ``ninja`` wheel (a dependency)
    installs it beside the interpreter, which is not on PATH when ``.venv/bin/python`` runs unactivated."""
    if shutil.which("ninja") is None:
        import ninja  # the pip package: its BIN_DIR holds the executable

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def _namespace() -> str:
    """The operator namespace, ``scratchllm_`` + a hash of the C++ source: graphs that ``torch.compile``
    caches on disk name the operator, so a graph compiled against an older kernel is never reused."""
    return "scratchllm_" + hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]


@functools.cache
def _build() -> str | None:
    """Compile and load the kernel once per process; ``None`` on success, else the reason it is unavailable."""
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return f"{DISABLE_ENV} is set"
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return f"it needs an x86 CPU with AVX2 (this one: {torch.backends.cpu.get_cpu_capability()})"
    namespace = _namespace()
    try:
        from torch.utils.cpp_extension import load

        _put_ninja_on_path()
        print("scratchllm: loading the matrix-vector kernel (its first build takes about 30 s)", file=sys.stderr)
        load(
            name="scratchllm_matvec",
            sources=[str(SOURCE)],
            extra_cflags=["-O3", "-mavx2", "-mfma", "-fopenmp", f"-DSCRATCHLLM_OPS={namespace}"],
            extra_ldflags=["-fopenmp"],  # the same OpenMP runtime PyTorch's own threads use
            is_python_module=False,  # the .so registers the operator
        )
    except Exception as exc:  # no compiler, missing headers, ...: fall back, loudly
        return f"it failed to build ({type(exc).__name__}: {str(exc).strip().splitlines()[-1][:200]})"

    if not _loaded:  # (a second build in the same process finds it registered)
        _loaded.append(getattr(torch.ops, namespace).matvec)

        @torch.library.register_fake(f"{namespace}::matvec")
        def _(x: Tensor, weight: Tensor, scale: Tensor | None = None) -> Tensor:  # shapes for torch.compile
            return x.new_empty(x.shape[0], weight.shape[0])

    return None


def matvec_available() -> bool:
    """Whether the kernel can run here (loads it on the first call, building it if needed).

    The first ``False`` is explained on stderr: decoding then uses PyTorch's own matrix products.
    """
    reason = _build()
    if reason is not None and not _announced:
        _announced.append(reason)
        print(f"scratchllm: the C++ matrix-vector kernel is off: {reason}; decoding uses PyTorch's matmul",
              file=sys.stderr)
    return reason is None


def matvec(x: Tensor, weight: Tensor, scale: Tensor | None = None) -> Tensor:
    """``(x [m, k] @ weight[n, k].T) * scale`` with the kernel, on CPU, in ``x``'s dtype.

    ``weight`` is float32 or bfloat16 (as ``x``, no ``scale``) or int8 with one ``scale`` per row (``x``
    float32 or bfloat16).
    """
    if not _loaded and not matvec_available():
        raise RuntimeError("the matrix-vector kernel is unavailable here (the reason is on stderr)")
    return _loaded[0](x, weight, scale)


class MatVecLinear(nn.Module):
    """An inference ``nn.Linear`` whose products of up to :data:`MAX_ROWS` rows use the matrix-vector kernel.

    It holds the original linear's ``weight`` and ``bias`` parameters (not copies), row-major, so parameter
    sharing such as a tied LM head is kept and ``state_dict`` is unchanged.
    :func:`~scratchllm.model.decoding_layout.set_weight_layout` leaves its weight row-major.
    """

    row_major_weight = True

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        linear.weight.data = linear.weight.data.contiguous()  # the kernel streams row-major rows
        self.weight = linear.weight
        self.bias = linear.bias

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features)
        # A prompt is a true matrix product, where MKL is at its best; and the kernel has no backward pass, so
        # a forward pass that records gradients (training the same weights) takes F.linear too.
        if rows.shape[0] > MAX_ROWS or (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            return F.linear(x, self.weight, self.bias)
        y = matvec(rows, self.weight)
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, matvec kernel"


def use_matvec(model: nn.Module) -> nn.Module:
    """Route the one-token products of ``model``'s CPU linears through the kernel, in place; returns ``model``.

    Every float32/bfloat16 ``nn.Linear`` becomes a :class:`MatVecLinear`; every int8
    :class:`~scratchllm.model.quantize.Int8Linear` switches its ``kernel`` on. Nothing changes when the
    kernel is unavailable (announced by :func:`matvec_available`).
    """
    from scratchllm.model.decoding_layout import replace_linears
    from scratchllm.model.quantize import Int8Linear

    def suitable(m: nn.Linear) -> bool:
        return m.weight.device.type == "cpu" and m.weight.dtype in (torch.float32, torch.bfloat16)

    int8 = [m for m in model.modules() if isinstance(m, Int8Linear) and m.weight.device.type == "cpu"]
    linears = any(type(m) is nn.Linear and suitable(m) for m in model.modules())
    if (int8 or linears) and matvec_available():
        replace_linears(model, MatVecLinear, suitable)
        for m in int8:
            m.kernel = True
    return model
