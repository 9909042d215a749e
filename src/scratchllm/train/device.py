"""Where a model runs and in which precision, decided in one place for training and for generation.

``auto`` means the best device present: CUDA, then Apple's MPS, then the CPU. A device that is named but absent
(``cuda`` on a machine without a GPU) or a name torch does not know is refused with one line, never a traceback.
Precision is resolved right after the device because it depends on it: ``auto`` picks bf16 only where the
hardware computes it natively.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from scratchllm.errors import ScratchLLMError

Precision = Literal["fp32", "bf16", "auto"]


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str, local_rank: int = 0, option: str = "device") -> torch.device:
    """``auto`` -> ``cuda:<local_rank>``, else ``mps``, else ``cpu``; a named device must exist on this machine.

    ``option`` is the flag the name came from (``train.device``, ``device``), so the error names it.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ScratchLLMError(f"{option}: unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ScratchLLMError(f"{option}: {name!r} asked for, but no CUDA GPU is available here")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        elif device.index >= torch.cuda.device_count():
            raise ScratchLLMError(
                f"{option}: {name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA GPU(s)"
            )
    elif device.type == "mps" and not _mps_available():
        raise ScratchLLMError(f"{option}: 'mps' asked for, but Apple's MPS backend is not available here")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ScratchLLMError(f"{option}: device type {device.type!r} is not supported; use cpu, cuda or mps")
    return device


def resolve_precision(precision: Precision | str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on GPUs with bf16 and CPUs with native bf16 instructions (AVX512-BF16/AMX), else fp32."""
    if precision != "auto":
        if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ScratchLLMError("train.precision: bf16 is not supported by this GPU; use fp32")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        try:
            flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "fp32"
        return "bf16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "fp32"
    return "fp32"
