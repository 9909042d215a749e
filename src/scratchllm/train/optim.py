"""AdamW with weight decay on matmul weights only.

Decoupled weight decay (Loshchilov & Hutter) pulls weights towards zero; that regularises the large matmul
matrices but only hurts parameters that set a scale or an offset (LayerNorm gains, biases) or that are looked up
rather than multiplied (embeddings, and the LM head when it is tied to them). So parameters go into two groups:
decay = tensors with >= 2 dimensions that do not belong to an ``nn.Embedding``; no decay = everything else.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW parameter groups: ``[{"params": decay, ...}, {"params": no_decay, "weight_decay": 0}]``."""
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for param in model.parameters():  # unique parameters: a tied matrix appears once
        if not param.requires_grad:
            continue
        if param.ndim >= 2 and id(param) not in embedding_ids:
            decay.append(param)
        else:
            no_decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_adamw(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW over :func:`parameter_groups`. ``fused=None`` picks the fused kernel on CUDA, ``foreach`` elsewhere."""
    if fused is None:
        fused = next(model.parameters()).device.type == "cuda"
    return torch.optim.AdamW(
        parameter_groups(model, weight_decay), lr=lr, betas=betas, eps=eps, fused=fused or None
    )
