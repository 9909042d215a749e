"""LoRA adapter folders: ours (``adapter.safetensors`` + ``adapter_config.json``) and Hugging Face peft's.

An adapter is small (the ``A``/``B`` matrices, plus any new layer that trained in full, such as a class head)
and only means something on top of its base model, so its config names the base (``base_model``) and the
LoRA settings needed to re-create the layers before loading the matrices. Both kinds of folder are written
atomically (:func:`~scratchllm.weights.checkpoint.write_folder`).

:func:`save_peft_adapter` writes ``adapter_model.safetensors`` + ``adapter_config.json`` under peft's names, so
``PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(hf_folder), folder)`` reproduces our model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from scratchllm.config import ModelConfig
from scratchllm.errors import ScratchLLMError
from scratchllm.model.lora import (
    LoRAConfig,
    apply_lora,
    load_lora_state_dict,
    lora_state_dict,
    peft_config,
    peft_state_dict,
)
from scratchllm.weights.checkpoint import (
    json_writer,
    load_safetensors,
    read_json,
    save_safetensors,
    write_folder,
)

ADAPTER_FILE = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_FORMAT = "scratchllm-lora"
PEFT_FILE = "adapter_model.safetensors"


def adapter_files(
    model: nn.Module, lora: LoRAConfig, *, base_model: str = "", extra: dict[str, Tensor] | None = None
) -> dict[str, Callable[[Path], Any]]:
    """The files of an adapter folder, as :func:`~scratchllm.weights.checkpoint.write_folder` takes them."""
    tensors = {**lora_state_dict(model), **(extra or {})}
    config = {"format": ADAPTER_FORMAT, "base_model": base_model, "lora": lora.to_dict(), "extra": sorted(extra or {})}
    return {ADAPTER_FILE: lambda p: save_safetensors(tensors, p, {"format": "pt"}), ADAPTER_CONFIG: json_writer(config)}


def save_adapter(
    model: nn.Module,
    lora: LoRAConfig,
    folder: str | Path,
    *,
    base_model: str = "",
    extra: dict[str, Tensor] | None = None,
) -> Path:
    """Write the LoRA matrices of ``model`` (and ``extra`` tensors, e.g. a new head) with their settings."""
    return write_folder(folder, adapter_files(model, lora, base_model=base_model, extra=extra))


def read_adapter(folder: str | Path) -> tuple[LoRAConfig, dict[str, Tensor], dict[str, Any]]:
    """The settings, tensors and raw config of an adapter folder written by :func:`save_adapter`."""
    folder = Path(folder)
    config_path = folder / ADAPTER_CONFIG
    if not config_path.is_file():
        raise ScratchLLMError(f"{folder}: missing {ADAPTER_CONFIG} (expected a LoRA adapter folder)")
    config = read_json(config_path)
    if config.get("format") != ADAPTER_FORMAT or not isinstance(config.get("lora"), dict):
        raise ScratchLLMError(f'{config_path}: not a scratchllm adapter ("format": "{ADAPTER_FORMAT}", "lora")')
    lora = LoRAConfig.from_dict(config["lora"], str(config_path))
    return lora, load_safetensors(folder / ADAPTER_FILE), config


def apply_adapter(
    model: nn.Module, folder: str | Path, *, full_precision_base: bool = False
) -> tuple[LoRAConfig, dict[str, Tensor]]:
    """Re-create the adapter's LoRA layers on ``model`` and load its matrices; return settings and extras.

    ``full_precision_base`` keeps the base weights as loaded even if training kept them in bf16 (to merge).
    """
    lora, tensors, config = read_adapter(folder)
    if full_precision_base:
        lora.base_bf16 = False
    extra_names = set(config.get("extra") or [])
    apply_lora(model, lora)
    adapters = {k: v for k, v in tensors.items() if k not in extra_names}
    load_lora_state_dict(model, adapters, str(Path(folder) / ADAPTER_FILE))
    return lora, {k: v for k, v in tensors.items() if k in extra_names}


def save_peft_adapter(
    model: nn.Module, lora: LoRAConfig, config: ModelConfig, folder: str | Path, base_model: str = ""
) -> Path:
    """Write the adapters as a Hugging Face peft folder for the transformers model of ``config``."""
    tensors = peft_state_dict(model, config)
    return write_folder(
        folder,
        {
            PEFT_FILE: lambda p: save_safetensors(tensors, p, {"format": "pt"}),
            ADAPTER_CONFIG: json_writer(peft_config(lora, config, base_model)),
        },
    )
