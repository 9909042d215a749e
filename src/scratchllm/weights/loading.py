"""``load(path)``: one entry point for every model source the framework reads.

A model is only usable with the tokenizer it was trained with (and, for a chat model, its chat template), so
the three always travel together. The source is recognised from the path:

* a ``.gguf`` file: llama.cpp's single-file format; config, weights, tokenizer and template all inside it;
* a folder whose ``config.json`` says ``"format": "scratchllm"``: our checkpoint; its tokenizer is
  ``MODEL/tokenizer`` or, for a pretraining checkpoint ``RUN/checkpoints/step-N``, the run's ``RUN/tokenizer``;
* any other folder with a ``config.json``: a Hugging Face folder with ``tokenizer.json`` (or GPT-2's vocabulary
  files) beside the weights and the chat template in ``tokenizer_config.json``;
* a LoRA adapter folder (``adapter_config.json``, written by ``finetune instruct|dpo --trains lora``): the base
  model its config names, loaded as above, with the adapter merged into its weights (the same outputs as the
  adapted model, at the speed of a plain one); a finetuning run folder stands for its ``model/`` or ``adapter/``.

Every command that takes ``--model`` goes through :func:`load`, and :func:`load_tokenizer` gives the tokenizer
alone from the same paths (``scratchllm tokenizer encode --tokenizer MODEL``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from scratchllm.errors import ScratchLLMError
from scratchllm.model import GPTModel
from scratchllm.model.lora import merge_lora
from scratchllm.tokenizer.base import Tokenizer
from scratchllm.tokenizer.bpe import Backend
from scratchllm.weights.adapters import ADAPTER_CONFIG, apply_adapter
from scratchllm.weights.checkpoint import CONFIG_FILE, FORMAT, check_folder, read_json

Source = Literal["scratchllm", "hf", "gguf", "adapter"]


@dataclass
class LoadedModel:
    """A model with the tokenizer and chat template that belong to it.

    ``chat_template`` is the model's own Jinja template, or ``None`` when it has none (our pretrained GPTs,
    base models): :func:`scratchllm.tokenizer.chat.tokenizer_chat` then falls back to the default template.
    """

    model: GPTModel
    tokenizer: Tokenizer
    chat_template: str | None
    source: Source
    path: Path


def model_source(path: str | Path) -> Source:
    """Which format ``path`` holds, from its name and ``config.json`` alone (no weights read)."""
    path = Path(path)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ScratchLLMError(f"{path}: GGUF file not found")
        return "gguf"
    if path.is_file():
        raise ScratchLLMError(f"{path}: is a file; expected a model folder (config.json + weights) or a .gguf file")
    if _is_adapter(path):
        return "adapter"
    folder = check_folder(path)
    return "scratchllm" if _is_ours(folder) else "hf"


def _is_ours(folder: Path) -> bool:
    return (folder / CONFIG_FILE).is_file() and read_json(folder / CONFIG_FILE).get("format") == FORMAT


def checkpoint_tokenizer_dir(model: str | Path) -> Path:
    """The tokenizer of our checkpoint: ``MODEL/tokenizer``, else the run's (``RUN/checkpoints/step-N``)."""
    model = Path(model)
    for candidate in (model / "tokenizer", model.parent.parent / "tokenizer"):
        if candidate.is_dir():
            return candidate
    raise ScratchLLMError(
        f"{model}: no tokenizer beside this checkpoint (looked for {model / 'tokenizer'} and "
        f"{model.parent.parent / 'tokenizer'}); pass --tokenizer"
    )


def check_vocabulary(model: GPTModel, tokenizer: Tokenizer, where: str) -> None:
    """Refuse a tokenizer that produces ids the model has no embedding for.

    A model may have *more* rows than the tokenizer has ids (vocabularies padded to a multiple of 64, as
    many open models are), never fewer.
    """
    n_tok, n_model = tokenizer.vocab_size, model.config.vocab_size
    if n_tok > n_model:
        raise ScratchLLMError(
            f"{where}: the tokenizer has {n_tok:,} ids but the model's vocabulary has only {n_model:,} rows; "
            "the model and the tokenizer do not belong together"
        )


def load(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    tokenizer: str | Path | None = None,
) -> LoadedModel:
    """Load a model, its tokenizer and its chat template from our checkpoint, a Hugging Face folder or a GGUF file.

    Args:
        path: the checkpoint folder, Hugging Face folder or ``.gguf`` file; or a LoRA adapter folder or a
            finetuning run folder (see the module docstring).
        device: where the weights go.
        dtype: convert the weights to this dtype (default: as stored; a GGUF file dequantizes to float32).
        tokenizer: use this tokenizer (folder or file) instead of the model's own.
    """
    path = _run_member(Path(path))
    source = model_source(path)
    if source == "adapter":
        return _load_adapter(path, device, dtype, tokenizer)
    if source == "gguf":
        from scratchllm.weights.gguf import read_gguf
        from scratchllm.weights.hf import model_from_hf_tensors

        contents = read_gguf(path, dtype or torch.float32)
        model = model_from_hf_tensors(contents.hf_config, contents.tensors, str(path), device=device, dtype=dtype)
        tok, template = contents.tokenizer, contents.chat_template
    else:
        from scratchllm.weights.checkpoint import load_model

        model = load_model(path, device=device, dtype=dtype)
        tok = load_tokenizer(path) if tokenizer is None else None  # the override replaces it unread
        template = getattr(tok, "chat_template", None)
    if tokenizer is not None:
        tok = load_tokenizer(tokenizer)
        template = getattr(tok, "chat_template", None) or template
    check_vocabulary(model, tok, str(path))
    return LoadedModel(model=model, tokenizer=tok, chat_template=template, source=source, path=path)


def _is_adapter(path: Path) -> bool:
    """A LoRA adapter folder: ``adapter_config.json`` and no model ``config.json``."""
    return (path / ADAPTER_CONFIG).is_file() and not (path / CONFIG_FILE).is_file()


def _run_member(path: Path) -> Path:
    """A finetuning run folder stands for the model it saved (``model/``, else ``adapter/``); other paths stay."""
    if path.is_dir() and not (path / CONFIG_FILE).is_file() and not _is_adapter(path):
        for name in ("model", "adapter"):
            if (path / name / CONFIG_FILE).is_file() or _is_adapter(path / name):
                return path / name
    return path


def _load_adapter(
    path: Path, device: str | torch.device, dtype: torch.dtype | None, tokenizer: str | Path | None
) -> LoadedModel:
    """An adapter's base model (with its tokenizer and template) and the adapter merged into its weights."""
    config = read_json(path / ADAPTER_CONFIG)
    if config.get("extra"):
        raise ScratchLLMError(
            f"{path}: the adapter of a classifier (it carries {', '.join(config['extra'])}); use "
            "scratchllm classify --model RUN"
        )
    loaded = load(_adapter_base(path, config), device=device, dtype=dtype, tokenizer=tokenizer)
    apply_adapter(loaded.model, path, full_precision_base=True)
    model = merge_lora(loaded.model).eval()
    return LoadedModel(model=model, tokenizer=loaded.tokenizer, chat_template=loaded.chat_template, source="adapter", path=path)


def _adapter_base(path: Path, config: dict) -> Path:
    """The base model an adapter folder's ``config`` names (it must still be where training found it)."""
    config_path = path / ADAPTER_CONFIG
    base = config.get("base_model")
    if not isinstance(base, str) or not base:
        raise ScratchLLMError(
            f"{config_path}: no base_model recorded; merge it yourself: scratchllm merge-lora --model BASE "
            f"--adapter {path} --out MERGED"
        )
    if not Path(base).exists():
        raise ScratchLLMError(f"{config_path}: its base model {base} is not there (moved?); merge it with merge-lora")
    return Path(base)


def load_tokenizer(path: str | Path, backend: Backend = "auto") -> Tokenizer:
    """The tokenizer at ``path`` or of the model at ``path``: the paths :func:`load` takes work here too.

    A tokenizer folder (ours, GPT-2's files, ``tokenizer.json``), a ``.gguf`` file, a Hugging Face model folder
    (its tokenizer files sit beside the weights) or our checkpoint (``MODEL/tokenizer``, else the run's).

    Args:
        path: the tokenizer folder, model folder or ``.gguf`` file.
        backend: encoder for our BPE vocabularies (see :func:`scratchllm.tokenizer.load`).
    """
    from scratchllm import tokenizer as tokenizers

    path = _run_member(Path(path))
    if _is_adapter(path):  # LoRA leaves the base's tokenizer as it is
        return load_tokenizer(_adapter_base(path, read_json(path / ADAPTER_CONFIG)), backend)
    if path.is_dir() and _is_ours(path):
        path = checkpoint_tokenizer_dir(path)
    return tokenizers.load(path, backend=backend)
