"""Our checkpoint folder: ``model.safetensors`` + ``config.json``, and the helpers every folder format shares.

A checkpoint is a folder with ``model.safetensors`` (the :class:`~scratchllm.model.GPTModel` state dict, a
tied LM head stored once) and ``config.json`` = ``{"format": "scratchllm", "model": <ModelConfig fields>}``.
Older checkpoints (before the Llama family) load unchanged: missing config fields take GPT-2's values.

Nothing here unpickles: safetensors everywhere. Every user mistake is a one-line :class:`ScratchLLMError`, and
folders are written so that a crash never leaves a half-written one (:func:`write_folder`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scratchllm.config import ModelConfig
from scratchllm.errors import ScratchLLMError
from scratchllm.model import GPTModel
from scratchllm.utf8 import read_utf8

FORMAT = "scratchllm"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


# ---------------------------------------------------------------------------------------- small helpers
def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_utf8(path))
    except json.JSONDecodeError as exc:
        raise ScratchLLMError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise ScratchLLMError(f"{path}: expected a JSON object at the top level")
    return data


def check_folder(folder: str | Path, expected: str = "a scratchllm or Hugging Face folder") -> Path:
    """``folder`` as a Path, after checking it exists and holds a ``config.json``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ScratchLLMError(f"{folder}: model folder not found")
    if not (folder / CONFIG_FILE).is_file():
        raise ScratchLLMError(f"{folder}: missing {CONFIG_FILE} (expected {expected})")
    return folder


def load_safetensors(path: Path) -> dict[str, Tensor]:
    """All tensors of a safetensors file; a truncated or corrupt file is one line naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ScratchLLMError(f"{path}: cannot read safetensors file ({str(exc).splitlines()[0]})") from None


def save_safetensors(tensors: Mapping[str, Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata=metadata)


def json_writer(data: dict[str, Any]) -> Callable[[Path], Any]:
    return lambda path: path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def write_folder(folder: str | Path, files: dict[str, Callable[[Path], Any]], drop: tuple[str, ...] = ()) -> Path:
    """Write ``files`` (name -> callable(path)) as ``folder``, so that a crash never leaves a mixed folder.

    The complete new folder is assembled under a temporary name beside it and renamed into place. Replacing an
    existing folder keeps its other files (a tokenizer, a README; hard-linked, not copied, where possible)
    except those named in ``drop`` (e.g. shards a single weights file replaces), moves the old folder aside,
    renames the new one in, and only then deletes the old one: at every moment either the old or the new
    folder is complete.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ScratchLLMError(f"{folder}: exists and is not a folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    old: Path | None = None
    try:
        for name, write in files.items():
            write(tmp / name)
        if folder.exists():
            for entry in folder.iterdir():
                if entry.name in files or entry.name in drop:
                    continue
                if entry.is_dir():
                    shutil.copytree(entry, tmp / entry.name)
                else:
                    try:
                        os.link(entry, tmp / entry.name)
                    except OSError:
                        shutil.copy2(entry, tmp / entry.name)
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            os.replace(folder, old)  # onto the empty folder mkdtemp made: a unique name, one rename
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not folder.exists():
            os.replace(old, folder)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def check_names(wanted: list[str], given: Mapping[str, Any], where: str, context: str = "") -> None:
    """Refuse a tensor set that lacks one of ``wanted`` or holds one more, naming (up to five of) them."""

    def some(names: list[str]) -> str:
        return ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")

    missing = [name for name in wanted if name not in given]
    if missing:
        raise ScratchLLMError(f"{where}: missing tensor(s) {some(missing)}")
    unexpected = sorted(set(given) - set(wanted))
    if unexpected:
        raise ScratchLLMError(f"{where}: unexpected tensor(s) {some(unexpected)}{context}")


def build_model(
    config: ModelConfig,
    state: Mapping[str, Tensor],
    where: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> GPTModel:
    """Create a model from a state dict in our names, checking every name and shape first.

    The model is built on the meta device (no memory, no random init) and the checked tensors are assigned,
    converted to ``dtype`` (default: the token embedding's dtype in the file) on ``device``. Returns it in
    eval mode.
    """
    with torch.device("meta"):
        model = GPTModel(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    state = dict(state)
    if config.tie_embeddings:
        expected.pop("lm_head.weight", None)
        state.pop("lm_head.weight", None)
    check_names(sorted(expected), state, where)
    for name, shape in expected.items():
        if tuple(state[name].shape) != shape:
            raise ScratchLLMError(
                f"{where}: tensor {name} has shape {list(state[name].shape)}, expected {list(shape)}"
            )
        if not state[name].dtype.is_floating_point:
            raise ScratchLLMError(f"{where}: tensor {name} has dtype {state[name].dtype}, expected a float type")
    dtype = dtype or state["tok_emb.weight"].dtype
    state = {k: v.to(device=device, dtype=dtype).contiguous() for k, v in state.items()}
    model.load_state_dict(state, strict=False, assign=True)
    if config.tie_embeddings:
        model.lm_head.weight = model.tok_emb.weight
    return model.eval()


# ---------------------------------------------------------------------------------------- our format
def save_model(
    model: GPTModel, folder: str | Path, extra_files: Mapping[str, Callable[[Path], Any]] | None = None
) -> Path:
    """Write ``model`` as ``folder/{model.safetensors,config.json}`` (atomically; see :func:`write_folder`).

    ``extra_files`` (name -> writer(path)) land in the same atomic step, e.g. the ``tokenizer`` folder.
    """
    state = model.state_dict()
    if model.config.tie_embeddings:
        state.pop("lm_head.weight", None)  # the same storage as tok_emb.weight; safetensors stores it once
    config = {"format": FORMAT, "model": model.config.to_dict()}
    return write_folder(
        folder,
        {
            WEIGHTS_FILE: lambda p: save_safetensors(state, p, {"format": "pt"}),
            CONFIG_FILE: json_writer(config),
            **(extra_files or {}),
        },
    )


def load_model(
    folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> GPTModel:
    """Load our checkpoint folder or a Hugging Face folder (detected from ``config.json``), in eval mode.

    ``dtype`` converts the weights (default: as stored).
    """
    folder = check_folder(folder)
    config = read_json(folder / CONFIG_FILE)
    if config.get("format") == FORMAT:
        return _load_ours(folder, config, device, dtype)
    if "model_type" in config or "architectures" in config or "n_embd" in config:
        from scratchllm.weights.hf import from_hf

        return from_hf(folder, device, dtype)
    raise ScratchLLMError(
        f'{folder / CONFIG_FILE}: not a scratchllm checkpoint ("format": "{FORMAT}") '
        'nor a Hugging Face config ("model_type")'
    )


def _load_ours(
    folder: Path, config: dict[str, Any], device: str | torch.device, dtype: torch.dtype | None
) -> GPTModel:
    cfg_path = folder / CONFIG_FILE
    if not isinstance(config.get("model"), dict):
        raise ScratchLLMError(f'{cfg_path}: field "model" must be an object of ModelConfig fields')
    model_config = ModelConfig.from_dict(config["model"], source=f"{cfg_path}: model")
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ScratchLLMError(f"{folder}: missing {WEIGHTS_FILE}")
    return build_model(model_config, load_safetensors(weights), str(weights), device, dtype)
