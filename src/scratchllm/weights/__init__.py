"""Reading and writing model weights: our checkpoint folders and Hugging Face folders.

* :mod:`scratchllm.weights.checkpoint` - our format (``model.safetensors`` + ``config.json``) and the folder
  helpers every format shares (atomic writes, checked loading);
* :mod:`scratchllm.weights.hf` - Hugging Face GPT-2, Llama, Qwen2 and Qwen3 folders, with the name maps both
  ways;
* :mod:`scratchllm.weights.gguf` - llama.cpp's GGUF files, read and written with the ``gguf`` package;
* :mod:`scratchllm.weights.loading` - :func:`load`, the one entry point: model + tokenizer + chat template from
  any of the three (and :func:`load_tokenizer`, the tokenizer alone from the same paths);
* :mod:`scratchllm.weights.saving` - :func:`save`, the way back: any of the three formats, tokenizer included.

This module re-exports the public API.
"""

from __future__ import annotations

from scratchllm.weights.checkpoint import CONFIG_FILE, FORMAT, WEIGHTS_FILE, load_model, save_model
from scratchllm.weights.hf import (
    config_from_hf,
    from_hf,
    hf_config_from,
    model_from_hf_tensors,
    state_dict_from_hf,
    state_dict_to_hf,
    to_hf,
)
from scratchllm.weights.loading import LoadedModel, load, load_tokenizer, model_source
from scratchllm.weights.saving import save

__all__ = [
    "CONFIG_FILE",
    "LoadedModel",
    "FORMAT",
    "WEIGHTS_FILE",
    "config_from_hf",
    "from_hf",
    "hf_config_from",
    "load",
    "load_model",
    "load_tokenizer",
    "model_from_hf_tensors",
    "model_source",
    "save",
    "save_model",
    "state_dict_from_hf",
    "state_dict_to_hf",
    "to_hf",
]
