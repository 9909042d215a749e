"""LoRA: finetune a large model by learning a small low-rank correction to some of its matrices.

Hu et al. (2021) observed that the change finetuning makes to a weight matrix has low "intrinsic rank". So
instead of updating ``W`` (``out x in``) we freeze it and learn ``delta W = (alpha / r) * B A`` with ``A``
(``r x in``) and ``B`` (``out x r``), ``r`` small (4-64)::

    y = W x + (alpha / r) * B (A dropout(x))

``B`` starts at zero, so before the first step the model is exactly the pretrained one; ``A`` starts random
(Kaiming-uniform, as ``nn.Linear`` initialises its weights) so that the gradient reaching ``B`` is not zero.
``alpha / r`` keeps the update's size comparable when ``r`` changes. Only ``A`` and ``B`` train: a 135M model
with r=16 on every linear of every block trains under 5 M parameters, and only they need saving.

Our decoder fuses query/key/value into one ``att.qkv`` and SwiGLU's gate/up into one ``ff.fc``. One LoRA over
a fused matrix is the same thing as one LoRA per projection that *share* ``A`` and split ``B`` by rows (row
block ``i`` of ``B A`` is ``B_i A``), which is how :func:`peft_state_dict` exports adapters Hugging Face peft
loads onto ``q_proj``/``k_proj``/``v_proj`` (and ``gate_proj``/``up_proj``).

Pieces: :class:`LoRALinear`, :func:`inject_lora` (by target names), :func:`merge_lora` (fold ``B A`` into
``W``: a plain model again), :func:`adapters_disabled` (the base model's outputs, e.g. DPO's reference model),
:func:`lora_state_dict` / :func:`load_lora_state_dict`, and :func:`peft_state_dict` / :func:`peft_config`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scratchllm.config import LoRAConfig, ModelConfig
from scratchllm.errors import ScratchLLMError

__all__ = [
    "TARGET_GROUPS",
    "LoRAConfig",
    "LoRALinear",
    "adapters_disabled",
    "apply_lora",
    "inject_lora",
    "load_lora_state_dict",
    "lora_layers",
    "lora_state_dict",
    "mark_only_lora_trainable",
    "merge_lora",
    "peft_config",
    "peft_state_dict",
    "resolve_targets",
    "trainable_parameters",
]

#: Friendly target names -> the module-name patterns they stand for (the same for GPT-2 and Llama blocks).
TARGET_GROUPS: dict[str, tuple[str, ...]] = {
    "attn": ("blocks.*.att.qkv", "blocks.*.att.out_proj"),
    "mlp": ("blocks.*.ff.fc", "blocks.*.ff.proj"),
    "all": ("blocks.*.att.qkv", "blocks.*.att.out_proj", "blocks.*.ff.fc", "blocks.*.ff.proj"),
}


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update: ``W x + b + (alpha/r) B A dropout(x)``.

    The base layer's ``weight`` and ``bias`` are kept under their own names, so the model's state dict keeps
    every name it had (``blocks.0.att.qkv.weight``) and gains ``...qkv.lora_A`` / ``...qkv.lora_B``.
    ``base_dtype=torch.bfloat16`` stores the frozen weight in bf16 (half the memory; the product is computed
    in bf16 and returned in the input's dtype) while ``A`` and ``B`` stay in float32.
    """

    def __init__(
        self,
        base: nn.Linear,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        base_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        weight = base.weight.detach()
        self.weight = nn.Parameter(weight.to(base_dtype) if base_dtype else weight, requires_grad=False)
        bias = base.bias.detach() if base.bias is not None else None
        self.bias = nn.Parameter(bias.to(base_dtype) if base_dtype else bias, False) if bias is not None else None
        factory = {"device": weight.device, "dtype": torch.float32 if base_dtype else weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's own initialisation
        self.dropout = nn.Dropout(dropout)
        self.enabled = True

    def forward(self, x: Tensor) -> Tensor:
        y = F.linear(x.to(self.weight.dtype), self.weight, self.bias).to(x.dtype)
        if not self.enabled:
            return y
        update = F.linear(F.linear(self.dropout(x).to(self.lora_A.dtype), self.lora_A), self.lora_B)
        return y + (self.scaling * update).to(y.dtype)

    def delta_weight(self) -> Tensor:
        """``(alpha / r) B A``: what this layer adds to ``W`` (float32)."""
        return self.scaling * (self.lora_B.float() @ self.lora_A.float())

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` computing what this layer computes (``W + (alpha/r) B A``), in W's dtype."""
        dtype = self.weight.dtype
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        linear = linear.to(device=self.weight.device, dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_((self.weight.float() + self.delta_weight()).to(dtype))
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}, alpha={self.alpha}"


# ---------------------------------------------------------------------------------------------- targets
def _linear_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, (nn.Linear, LoRALinear))]


def _matches(name: str, pattern: str) -> bool:
    """A module name matches a glob either as a whole or as a suffix on a dot (``att.qkv``, ``qkv``)."""
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, "*." + pattern)


def resolve_targets(model: nn.Module, targets: Sequence[str]) -> list[str]:
    """The names of the linear layers ``targets`` select; a target that selects none is an error.

    A target is a friendly name (:data:`TARGET_GROUPS`: ``attn``, ``mlp``, ``all``) or a module name or glob
    (``att.qkv``, ``blocks.11.ff.*``, ``lm_head``), matched as the whole name or its end after a dot.
    """
    names = _linear_names(model)
    chosen: list[str] = []
    for target in targets:
        patterns = TARGET_GROUPS.get(target, (target,))
        hits = [n for n in names if any(_matches(n, p) for p in patterns)]
        if not hits:
            some = ", ".join(sorted({n.split(".", 2)[-1] if n.startswith("blocks.") else n for n in names}))
            raise ScratchLLMError(
                f"lora target {target!r} matches no linear layer; use {', '.join(TARGET_GROUPS)} or one of "
                f"{some} (globs such as blocks.1*.att.qkv allowed)"
            )
        chosen.extend(n for n in hits if n not in chosen)
    return chosen


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Module name -> :class:`LoRALinear` for every adapted layer of ``model``."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def mark_only_lora_trainable(model: nn.Module) -> None:
    """Freeze every parameter except the LoRA matrices."""
    for name, param in model.named_parameters():
        param.requires_grad_(name.endswith((".lora_A", ".lora_B")))


def inject_lora(
    model: nn.Module,
    rank: int = 16,
    alpha: float = 16.0,
    dropout: float = 0.0,
    targets: Sequence[str] = ("all",),
    *,
    base_dtype: torch.dtype | None = None,
    freeze: bool = True,
) -> LoRAConfig:
    """Replace the targeted linear layers of ``model`` by :class:`LoRALinear` s (in place); return the settings.

    With ``freeze`` every other parameter is frozen too, so only ``A`` and ``B`` train (a recipe may unfreeze
    a new head afterwards). ``base_dtype`` stores the adapted layers' frozen weights in that dtype.
    """
    config = LoRAConfig(rank=rank, alpha=alpha, dropout=dropout, targets=list(targets))
    config.base_bf16 = base_dtype == torch.bfloat16
    if lora_layers(model):
        raise ScratchLLMError("inject_lora: the model has LoRA layers already; merge or remove them first")
    config.modules = resolve_targets(model, config.targets)
    for name in config.modules:
        base = model.get_submodule(name)
        _set_module(model, name, LoRALinear(base, rank, alpha, dropout, base_dtype))
    if freeze:
        mark_only_lora_trainable(model)
    return config


def apply_lora(model: nn.Module, config: LoRAConfig, *, freeze: bool = True) -> LoRAConfig:
    """:func:`inject_lora` with the settings of ``config`` (its recorded ``modules`` when it has them)."""
    return inject_lora(
        model, config.rank, config.alpha, config.dropout, config.modules or config.targets,
        base_dtype=torch.bfloat16 if config.base_bf16 else None, freeze=freeze,
    )  # fmt: skip


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (``W <- W + (alpha/r) B A``); the model is plain again (in place)."""
    for name, layer in lora_layers(model).items():
        _set_module(model, name, layer.merged())
    return model


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block the model computes as its frozen base (every adapter switched off)."""
    layers = list(lora_layers(model).values())
    previous = [layer.enabled for layer in layers]
    for layer in layers:
        layer.enabled = False
    try:
        yield model
    finally:
        for layer, enabled in zip(layers, previous):
            layer.enabled = enabled


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; a tied matrix counts once."""
    params = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


# ---------------------------------------------------------------------------------------------- state
def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Only the adapter matrices (``NAME.lora_A`` / ``NAME.lora_B``), detached copies on the CPU."""
    return {
        f"{name}.{part}": getattr(layer, part).detach().cpu().contiguous()
        for name, layer in lora_layers(model).items()
        for part in ("lora_A", "lora_B")
    }


def load_lora_state_dict(model: nn.Module, state: dict[str, Tensor], where: str) -> None:
    """Copy saved adapter matrices into a model :func:`inject_lora` prepared with the same settings."""
    expected = lora_state_dict(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ScratchLLMError(
            f"{where}: adapter does not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    layers = lora_layers(model)
    with torch.no_grad():
        for key, tensor in state.items():
            name, part = key.rsplit(".", 1)
            param = getattr(layers[name], part)
            if tuple(tensor.shape) != tuple(param.shape):
                raise ScratchLLMError(
                    f"{where}: tensor {key} has shape {list(tensor.shape)}, expected {list(param.shape)}"
                )
            param.copy_(tensor)


# ---------------------------------------------------------------------------------------------- peft
def _peft_pieces(config: ModelConfig, suffix: str) -> list[tuple[str, int]]:
    """For one of our adapted block layers, the Hugging Face module names and the rows of each."""
    from scratchllm.weights.hf import hf_family

    if hf_family(config) == "gpt2":
        gpt2 = {"att.qkv": "attn.c_attn", "att.out_proj": "attn.c_proj", "ff.fc": "mlp.c_fc", "ff.proj": "mlp.c_proj"}
        return [(gpt2[suffix], -1)]
    q, kv, hidden = config.n_heads * config.head_dim, config.n_kv_heads * config.head_dim, config.hidden_dim
    llama = {
        "att.qkv": [("self_attn.q_proj", q), ("self_attn.k_proj", kv), ("self_attn.v_proj", kv)],
        "att.out_proj": [("self_attn.o_proj", -1)],
        "ff.fc": [("mlp.gate_proj", hidden), ("mlp.up_proj", hidden)],
        "ff.proj": [("mlp.down_proj", -1)],
    }
    return llama[suffix]


def _peft_prefix(config: ModelConfig) -> str:
    from scratchllm.weights.hf import hf_family

    return "base_model.model.transformer.h" if hf_family(config) == "gpt2" else "base_model.model.model.layers"


def peft_state_dict(model: nn.Module, config: ModelConfig) -> dict[str, Tensor]:
    """The adapters under the names Hugging Face peft gives a LoRA on the transformers model.

    A fused layer's single ``A`` is repeated for each projection and its ``B`` split by rows: exactly the
    same update. Only adapters inside the blocks can be exported (an adapted ``lm_head`` is refused).
    """
    tensors: dict[str, Tensor] = {}
    for name, layer in lora_layers(model).items():
        parts = name.split(".")
        if len(parts) != 4 or parts[0] != "blocks":
            raise ScratchLLMError(f"peft export: adapter on {name} has no Hugging Face counterpart")
        layer_index, suffix = parts[1], ".".join(parts[2:])
        pieces = _peft_pieces(config, suffix)
        rows = [n if n > 0 else layer.out_features for _, n in pieces]
        b_parts = layer.lora_B.detach().cpu().float().split(rows, dim=0)
        for (hf_name, _), b in zip(pieces, b_parts):
            key = f"{_peft_prefix(config)}.{layer_index}.{hf_name}"
            tensors[f"{key}.lora_A.weight"] = layer.lora_A.detach().cpu().float().contiguous().clone()
            tensors[f"{key}.lora_B.weight"] = b.contiguous().clone()
    if not tensors:
        raise ScratchLLMError("peft export: the model has no LoRA layers")
    return tensors


def peft_config(lora: LoRAConfig, config: ModelConfig, base_model: str = "") -> dict[str, Any]:
    """``adapter_config.json`` for :func:`peft_state_dict` (task CAUSAL_LM; GPT-2's Conv1D is fan-in-fan-out)."""
    from scratchllm.weights.hf import hf_family

    modules = sorted(
        {hf.rsplit(".", 1)[-1] for name in lora.modules for hf, _ in _peft_pieces(config, name.split(".", 2)[2])}
    )
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": modules,
        "fan_in_fan_out": hf_family(config) == "gpt2",
        "bias": "none",
        "inference_mode": True,
        "use_rslora": False,
        "modules_to_save": None,
        "init_lora_weights": True,
    }
