"""Reading and writing model weights: our checkpoint folder and Hugging Face GPT-2 folders.

Our format is a folder with ``model.safetensors`` (the :class:`~scratchllm.model.GPTModel` state dict, a tied
LM head stored once) and ``config.json`` = ``{"format": "scratchllm", "model": <ModelConfig fields>}``.

Hugging Face GPT-2 differs in three ways that :func:`from_hf` / :func:`to_hf` translate:

* names: ``transformer.h.N.attn.c_attn`` is our ``blocks.N.att.qkv`` and so on (:data:`HF_NAMES`);
* layout: its ``Conv1D`` layers store weights as ``[in, out]``, the transpose of ``nn.Linear``;
* tying: with ``tie_word_embeddings`` (the default) ``lm_head.weight`` is the token embedding and may be absent.

Nothing here unpickles: safetensors everywhere, and ``pytorch_model.bin`` only via
``torch.load(weights_only=True)``. Every user mistake is a one-line :class:`ScratchLLMError`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
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

# Per-block names: Hugging Face suffix -> ours, and whether HF stores the weight transposed (Conv1D).
HF_NAMES: dict[str, tuple[str, bool]] = {
    "ln_1.weight": ("norm1.weight", False),
    "ln_1.bias": ("norm1.bias", False),
    "attn.c_attn.weight": ("att.qkv.weight", True),
    "attn.c_attn.bias": ("att.qkv.bias", False),
    "attn.c_proj.weight": ("att.out_proj.weight", True),
    "attn.c_proj.bias": ("att.out_proj.bias", False),
    "ln_2.weight": ("norm2.weight", False),
    "ln_2.bias": ("norm2.bias", False),
    "mlp.c_fc.weight": ("ff.fc.weight", True),
    "mlp.c_fc.bias": ("ff.fc.bias", False),
    "mlp.c_proj.weight": ("ff.proj.weight", True),
    "mlp.c_proj.bias": ("ff.proj.bias", False),
}
HF_TOP_NAMES = {
    "wte.weight": "tok_emb.weight",
    "wpe.weight": "pos_emb.weight",
    "ln_f.weight": "final_norm.weight",
    "ln_f.bias": "final_norm.bias",
}
# Buffers some older HF checkpoints saved (the causal mask): not weights, ignored on load.
_HF_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")


# ---------------------------------------------------------------------------------------- small helpers
def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_utf8(path))
    except json.JSONDecodeError as exc:
        raise ScratchLLMError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise ScratchLLMError(f"{path}: expected a JSON object at the top level")
    return data


def _check_folder(folder: Path) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise ScratchLLMError(f"{folder}: model folder not found")
    if not (folder / CONFIG_FILE).is_file():
        raise ScratchLLMError(
            f"{folder}: missing {CONFIG_FILE} (expected a scratchllm or Hugging Face GPT-2 folder)"
        )
    return folder


def _load_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ScratchLLMError(f"{path}: cannot read safetensors file ({str(exc).splitlines()[0]})") from None


def _save_safetensors(tensors: dict[str, Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata=metadata)


def _write_folder(folder: Path, files: dict[str, Any]) -> None:
    """Write ``files`` (name -> callable(path)) so that a crash never leaves a half-written checkpoint.

    A new folder is assembled under a temporary name beside it and renamed into place in one step. An existing
    folder gets each file written to a temporary name and ``os.replace``-d, weights first and config last, so
    a reader never sees a new config next to old weights for long, and never a truncated file.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    if not folder.exists():
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
        try:
            for name, write in files.items():
                write(tmp / name)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return
    if not folder.is_dir():
        raise ScratchLLMError(f"{folder}: exists and is not a folder")
    for name, write in files.items():
        tmp = folder / f".{name}.tmp-{os.getpid()}"
        try:
            write(tmp)
            os.replace(tmp, folder / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _json_writer(data: dict[str, Any]) -> Any:
    return lambda path: path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _build(
    config: ModelConfig,
    state: dict[str, Tensor],
    where: str,
    device: str | torch.device,
    file_name: Any = lambda name: (name, False),
) -> GPTModel:
    """Create a model from a state dict in our names, checking every name and shape first.

    ``file_name(ours) -> (name in the file, stored transposed)`` lets messages name tensors, and give shapes,
    as the file holds them. The model is built on the meta device (no memory, no random init) and the checked
    tensors are assigned.
    """
    with torch.device("meta"):
        model = GPTModel(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if config.tie_embeddings:
        expected.pop("lm_head.weight", None)
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}
    missing = sorted(file_name(k)[0] for k in set(expected) - set(state))
    unexpected = sorted(file_name(k)[0] for k in set(state) - set(expected))
    if missing:
        raise ScratchLLMError(
            f"{where}: missing tensor(s) {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
        )
    if unexpected:
        more = " ..." if len(unexpected) > 5 else ""
        raise ScratchLLMError(f"{where}: unexpected tensor(s) {', '.join(unexpected[:5])}{more}")
    for name, shape in expected.items():
        if tuple(state[name].shape) != shape:
            shown, transposed = file_name(name)
            got, want = list(state[name].shape), list(shape)
            if transposed:
                got, want = got[::-1], want[::-1]
            raise ScratchLLMError(f"{where}: tensor {shown} has shape {got}, expected {want}")
    dtype = state["tok_emb.weight"].dtype
    if not dtype.is_floating_point:
        raise ScratchLLMError(f"{where}: tensor tok_emb.weight has dtype {dtype}, expected a float type")
    state = {k: v.to(device=device, dtype=dtype).contiguous() for k, v in state.items()}
    model.load_state_dict(state, strict=False, assign=True)
    if config.tie_embeddings:
        model.lm_head.weight = model.tok_emb.weight
    return model.eval()


# ---------------------------------------------------------------------------------------- our format
def save_model(model: GPTModel, folder: str | Path) -> Path:
    """Write ``model`` as ``folder/{model.safetensors,config.json}`` (atomically; see :func:`_write_folder`)."""
    folder = Path(folder)
    state = model.state_dict()
    if model.config.tie_embeddings:
        state.pop("lm_head.weight", None)  # the same storage as tok_emb.weight; safetensors stores it once
    config = {"format": FORMAT, "model": model.config.to_dict()}
    _write_folder(
        folder,
        {
            WEIGHTS_FILE: lambda p: _save_safetensors(state, p, {"format": "pt"}),
            CONFIG_FILE: _json_writer(config),
        },
    )
    return folder


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> GPTModel:
    """Load our checkpoint folder or a Hugging Face GPT-2 folder (detected from ``config.json``), in eval mode."""
    folder = _check_folder(Path(folder))
    config = _read_json(folder / CONFIG_FILE)
    if config.get("format") == FORMAT:
        return _load_ours(folder, config, device)
    if "model_type" in config or "n_embd" in config:
        return from_hf(folder, device)
    raise ScratchLLMError(
        f'{folder / CONFIG_FILE}: not a scratchllm checkpoint ("format": "{FORMAT}") '
        'nor a Hugging Face config ("model_type")'
    )


def _load_ours(folder: Path, config: dict[str, Any], device: str | torch.device) -> GPTModel:
    cfg_path = folder / CONFIG_FILE
    if not isinstance(config.get("model"), dict):
        raise ScratchLLMError(f'{cfg_path}: field "model" must be an object of ModelConfig fields')
    model_config = ModelConfig.from_dict(config["model"], source=f"{cfg_path}: model")
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ScratchLLMError(f"{folder}: missing {WEIGHTS_FILE}")
    return _build(model_config, _load_safetensors(weights), str(weights), device)


# ---------------------------------------------------------------------------------------- Hugging Face
def config_from_hf(hf: dict[str, Any], where: str = "config.json") -> ModelConfig:
    """Translate a Hugging Face ``GPT2Config`` dict, refusing options our architecture does not implement."""
    model_type = hf.get("model_type")
    if model_type not in (None, "gpt2"):
        raise ScratchLLMError(f'{where}: model_type {model_type!r} is not supported; expected "gpt2"')
    required = ("vocab_size", "n_embd", "n_layer", "n_head", "n_positions")
    missing = [k for k in required if k not in hf]
    if missing:
        raise ScratchLLMError(f"{where}: missing field(s) {', '.join(missing)} of a GPT-2 config")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        raise ScratchLLMError(
            f'{where}: activation_function {activation!r} is not supported; expected "gelu_new" (GELU, tanh)'
        )
    n_inner = hf.get("n_inner")
    if n_inner not in (None, 4 * hf["n_embd"]):
        raise ScratchLLMError(f"{where}: n_inner {n_inner} is not supported; expected null or 4 * n_embd")
    for flag, wanted in (
        ("scale_attn_weights", True),
        ("scale_attn_by_inverse_layer_idx", False),
        ("add_cross_attention", False),
    ):
        if hf.get(flag, wanted) != wanted:
            raise ScratchLLMError(f"{where}: {flag}={hf[flag]!r} is not supported; expected {wanted}")
    return ModelConfig.from_dict(
        {
            "vocab_size": hf["vocab_size"],
            "context_length": hf["n_positions"],
            "emb_dim": hf["n_embd"],
            "n_heads": hf["n_head"],
            "n_layers": hf["n_layer"],
            "drop_rate": float(hf.get("resid_pdrop", 0.0) or 0.0),
            "qkv_bias": True,  # GPT-2's c_attn always has a bias
            "tie_embeddings": bool(hf.get("tie_word_embeddings", True)),
            "layer_norm_eps": float(hf.get("layer_norm_epsilon", 1e-5)),
        },
        source=where,
    )


def _hf_state(folder: Path) -> tuple[dict[str, Tensor], Path]:
    safetensors_path = folder / "model.safetensors"
    bin_path = folder / "pytorch_model.bin"
    if safetensors_path.is_file():
        return _load_safetensors(safetensors_path), safetensors_path
    if bin_path.is_file():
        try:
            state = torch.load(bin_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for corrupt or unsafe files
            raise ScratchLLMError(f"{bin_path}: cannot read ({str(exc).splitlines()[0]})") from None
        if not isinstance(state, dict):
            raise ScratchLLMError(f"{bin_path}: expected a state dict of tensors")
        return state, bin_path
    raise ScratchLLMError(f"{folder}: missing model.safetensors (or pytorch_model.bin)")


def from_hf(folder: str | Path, device: str | torch.device = "cpu") -> GPTModel:
    """Load a Hugging Face GPT-2 folder (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``)."""
    folder = _check_folder(Path(folder))
    config = config_from_hf(_read_json(folder / CONFIG_FILE), str(folder / CONFIG_FILE))
    hf_state, where = _hf_state(folder)
    state: dict[str, Tensor] = {}
    for name, tensor in hf_state.items():
        key = name.removeprefix("transformer.")
        if key.endswith(_HF_IGNORED_SUFFIXES):
            continue
        if key == "lm_head.weight":
            state["lm_head.weight"] = tensor
        elif key in HF_TOP_NAMES:
            state[HF_TOP_NAMES[key]] = tensor
        elif key.startswith("h.") and key.count(".") >= 2:
            _, layer, suffix = key.split(".", 2)
            if suffix not in HF_NAMES or not layer.isdigit():
                raise ScratchLLMError(f"{where}: unexpected tensor {name}")
            ours, transposed = HF_NAMES[suffix]
            state[f"blocks.{layer}.{ours}"] = tensor.t() if transposed and tensor.dim() == 2 else tensor
        else:
            raise ScratchLLMError(f"{where}: unexpected tensor {name}")
    if not config.tie_embeddings and "lm_head.weight" not in state:
        raise ScratchLLMError(f"{where}: missing tensor lm_head.weight (tie_word_embeddings is false)")
    return _build(config, state, str(where), device, _hf_name)


def _hf_name(ours: str) -> tuple[str, bool]:
    """Our tensor name -> (Hugging Face name, stored transposed as Conv1D)."""
    for hf_top, name in HF_TOP_NAMES.items():
        if name == ours:
            return "transformer." + hf_top, False
    parts = ours.split(".", 2)
    if parts[0] == "blocks" and len(parts) == 3:
        for hf_suffix, (name, transposed) in HF_NAMES.items():
            if name == parts[2]:
                return f"transformer.h.{parts[1]}.{hf_suffix}", transposed
    return ours, False


def to_hf(model: GPTModel, folder: str | Path) -> Path:
    """Write ``model`` as a Hugging Face GPT-2 folder that ``GPT2LMHeadModel.from_pretrained`` loads.

    A model without qkv bias gets zero ``c_attn.bias`` tensors (GPT-2 always has one), which computes the same.
    """
    cfg = model.config
    sd = model.state_dict()
    tensors: dict[str, Tensor] = {}
    for hf_name, ours in HF_TOP_NAMES.items():
        tensors["transformer." + hf_name] = sd[ours]
    for i in range(cfg.n_layers):
        for hf_suffix, (ours, transposed) in HF_NAMES.items():
            key = f"blocks.{i}.{ours}"
            if key not in sd:  # qkv bias absent
                tensor = torch.zeros(3 * cfg.emb_dim, dtype=sd[f"blocks.{i}.att.qkv.weight"].dtype)
            else:
                tensor = sd[key].t() if transposed else sd[key]
            tensors[f"transformer.h.{i}.{hf_suffix}"] = tensor
    if not cfg.tie_embeddings:
        tensors["lm_head.weight"] = sd["lm_head.weight"]
    dtype = str(sd["tok_emb.weight"].dtype).removeprefix("torch.")
    hf_config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.context_length,
        "n_ctx": cfg.context_length,
        "n_embd": cfg.emb_dim,
        "n_layer": cfg.n_layers,
        "n_head": cfg.n_heads,
        "n_inner": None,
        "activation_function": "gelu_new",
        "resid_pdrop": cfg.drop_rate,
        "embd_pdrop": cfg.drop_rate,
        "attn_pdrop": cfg.drop_rate,
        "layer_norm_epsilon": cfg.layer_norm_eps,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "tie_word_embeddings": cfg.tie_embeddings,
        "torch_dtype": dtype,
        "bos_token_id": min(50256, cfg.vocab_size - 1),  # GPT-2's <|endoftext|>
        "eos_token_id": min(50256, cfg.vocab_size - 1),
    }
    _write_folder(
        Path(folder),
        {
            "model.safetensors": lambda p: _save_safetensors(tensors, p, {"format": "pt"}),
            CONFIG_FILE: _json_writer(hf_config),
        },
    )
    return Path(folder)
