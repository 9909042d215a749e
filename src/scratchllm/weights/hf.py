"""Hugging Face folders: GPT-2, Llama, Qwen2 and Qwen3 (``config.json`` + safetensors, single or sharded).

A Hugging Face model folder holds the same matrices as our checkpoints under other names and, in places, in
another arrangement. Everything that differs is translated here and nowhere else:

* **config**: :func:`config_from_hf` reads ``GPT2Config`` / ``LlamaConfig`` / ``Qwen2Config`` / ``Qwen3Config``
  fields into a :class:`~scratchllm.config.ModelConfig` (refusing options our decoder does not implement, so
  nothing is silently computed differently); :func:`hf_config_from` writes them back.
* **names**: ``model.layers.N.self_attn.o_proj`` is our ``blocks.N.att.out_proj`` and so on (:func:`hf_layout`).
* **fusion**: we keep query/key/value in one ``att.qkv`` matrix and SwiGLU's gate/up in one ``ff.fc`` (one
  matrix multiply instead of three or two, which matters when decoding); Llama-family files store them as
  separate ``q_proj``/``k_proj``/``v_proj`` and ``gate_proj``/``up_proj``, stacked here by rows.
* **transposes**: GPT-2's ``Conv1D`` layers store weights ``[in, out]``, the transpose of ``nn.Linear``.
* **tying**: with ``tie_word_embeddings`` the LM head is the token embedding and ``lm_head.weight`` may be absent.

The pure functions :func:`config_from_hf`, :func:`hf_config_from`, :func:`state_dict_from_hf`,
:func:`state_dict_to_hf` and :func:`model_from_hf_tensors` work on dicts and tensors only, so other formats
that use Hugging Face names (the GGUF reader) reuse them. :func:`from_hf` and :func:`to_hf` add the files.
Nothing unpickles: ``pytorch_model.bin`` is read only with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from scratchllm.config import ModelConfig
from scratchllm.errors import ScratchLLMError
from scratchllm.model import GPTModel
from scratchllm.weights.checkpoint import (
    CONFIG_FILE,
    build_model,
    check_folder,
    check_names,
    json_writer,
    load_safetensors,
    read_json,
    save_safetensors,
    write_folder,
)

ARCHITECTURES = {
    "gpt2": "GPT2LMHeadModel",
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}
SAFETENSORS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
BIN_FILE = "pytorch_model.bin"
# Buffers some checkpoints saved (GPT-2's causal mask, rotary frequencies): not weights, ignored on load.
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")

# GPT-2, per block: Hugging Face suffix -> our suffix, and whether HF stores it transposed (Conv1D).
GPT2_BLOCK: dict[str, tuple[str, bool]] = {
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
GPT2_TOP = {
    "wte.weight": "tok_emb.weight",
    "wpe.weight": "pos_emb.weight",
    "ln_f.weight": "final_norm.weight",
    "ln_f.bias": "final_norm.bias",
}
# Llama family, per block: our suffix -> the Hugging Face suffixes stacked (by rows) to make it.
LLAMA_BLOCK: dict[str, tuple[str, ...]] = {
    "norm1.weight": ("input_layernorm.weight",),
    "att.qkv.weight": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    "att.qkv.bias": ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"),
    "att.q_norm.weight": ("self_attn.q_norm.weight",),
    "att.k_norm.weight": ("self_attn.k_norm.weight",),
    "att.out_proj.weight": ("self_attn.o_proj.weight",),
    "norm2.weight": ("post_attention_layernorm.weight",),
    "ff.fc.weight": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
    "ff.proj.weight": ("mlp.down_proj.weight",),
}
LLAMA_TOP = {"model.embed_tokens.weight": "tok_emb.weight", "model.norm.weight": "final_norm.weight"}


# ---------------------------------------------------------------------------------------- config
def hf_model_type(hf: Mapping[str, Any], where: str = "config.json") -> str:
    """``gpt2``, ``llama``, ``qwen2`` or ``qwen3``, from ``model_type`` or ``architectures``."""
    model_type = hf.get("model_type")
    architectures = hf.get("architectures") or []
    if model_type in ARCHITECTURES:
        return str(model_type)
    by_arch = {arch: kind for kind, arch in ARCHITECTURES.items()}
    for arch in architectures if isinstance(architectures, list) else []:
        if arch in by_arch:
            return by_arch[arch]
    if model_type is None and not architectures and "n_embd" in hf:
        return "gpt2"  # very old GPT-2 configs name neither
    raise ScratchLLMError(
        f"{where}: architecture {architectures or None} (model_type {model_type!r}) is not supported; expected "
        f"one of {', '.join(ARCHITECTURES.values())}"
    )


def config_from_hf(hf_config: Mapping[str, Any], where: str = "config.json") -> ModelConfig:
    """Translate a Hugging Face ``config.json`` (GPT-2, Llama, Qwen2, Qwen3), refusing what we do not implement."""
    kind = hf_model_type(hf_config, where)
    if kind == "gpt2":
        return _gpt2_config(hf_config, where)
    return _llama_config(hf_config, kind, where)


def _require(hf: Mapping[str, Any], keys: tuple[str, ...], where: str, what: str) -> None:
    missing = [k for k in keys if k not in hf]
    if missing:
        raise ScratchLLMError(f"{where}: missing field(s) {', '.join(missing)} of a {what} config")


def _refuse(hf: Mapping[str, Any], where: str, wanted: dict[str, Any]) -> None:
    """Each ``key: value`` in ``wanted`` is the only value we implement (an absent key means that value)."""
    for key, value in wanted.items():
        if hf.get(key, value) != value:
            raise ScratchLLMError(f"{where}: {key}={hf[key]!r} is not supported; expected {value!r}")


def _gpt2_config(hf: Mapping[str, Any], where: str) -> ModelConfig:
    _require(hf, ("vocab_size", "n_embd", "n_layer", "n_head", "n_positions"), where, "GPT-2")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        raise ScratchLLMError(
            f'{where}: activation_function {activation!r} is not supported; expected "gelu_new" (GELU, tanh)'
        )
    only = {
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "add_cross_attention": False,
        "reorder_and_upcast_attn": False,
    }
    _refuse(hf, where, only)
    return ModelConfig.from_dict(
        {
            "vocab_size": hf["vocab_size"],
            "context_length": hf["n_positions"],
            "emb_dim": hf["n_embd"],
            "n_heads": hf["n_head"],
            "n_layers": hf["n_layer"],
            "hidden_dim": hf.get("n_inner") or 4 * hf["n_embd"],
            "drop_rate": float(hf.get("resid_pdrop", 0.0) or 0.0),
            "qkv_bias": True,  # GPT-2's layers always have biases
            "bias": True,
            "tie_embeddings": bool(hf.get("tie_word_embeddings", True)),
            "norm_eps": float(hf.get("layer_norm_epsilon", 1e-5)),
        },
        source=where,
    )


def _rope_from_hf(hf: Mapping[str, Any], where: str) -> tuple[float, dict[str, Any] | None]:
    """``rope_theta`` and ``rope_scaling``, from the classic keys or transformers 5's ``rope_parameters``."""
    params = hf.get("rope_parameters")
    if isinstance(params, dict):
        theta, scaling = params.get("rope_theta", hf.get("rope_theta", 10000.0)), params
    else:
        theta, scaling = hf.get("rope_theta", 10000.0), hf.get("rope_scaling")
    if not scaling:
        return float(theta), None
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if scaling.get("partial_rotary_factor", 1.0) != 1.0:
        factor = scaling["partial_rotary_factor"]
        raise ScratchLLMError(f"{where}: partial_rotary_factor {factor} is not supported; expected 1.0")
    if rope_type == "default":
        return float(theta), None
    if rope_type != "llama3":
        raise ScratchLLMError(
            f'{where}: rope_scaling type {rope_type!r} is not supported; expected "llama3" or none'
        )
    keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    missing = [k for k in keys if k not in scaling]
    if missing:
        raise ScratchLLMError(f"{where}: rope_scaling of type llama3 lacks {', '.join(missing)}")
    return float(theta), {"rope_type": "llama3", **{k: scaling[k] for k in keys}}


def _llama_config(hf: Mapping[str, Any], kind: str, where: str) -> ModelConfig:
    required = (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "max_position_embeddings",
    )
    _require(hf, required, where, ARCHITECTURES[kind])
    _refuse(hf, where, {"hidden_act": "silu", "mlp_bias": False, "use_sliding_window": False, "pretraining_tp": 1})
    if kind != "qwen2":  # Qwen2 has q/k/v biases whatever the config says; Llama/Qwen3's switch covers all four
        _refuse(hf, where, {"attention_bias": False})
    layer_types = hf.get("layer_types") or []
    if any(t != "full_attention" for t in layer_types):
        raise ScratchLLMError(
            f"{where}: layer_types {sorted(set(layer_types))} is not supported; expected full_attention only"
        )
    theta, scaling = _rope_from_hf(hf, where)
    heads = hf["num_attention_heads"]
    default_head_dim = 128 if kind == "qwen3" else hf["hidden_size"] // heads  # as each HF config class does
    return ModelConfig.from_dict(
        {
            "vocab_size": hf["vocab_size"],
            "context_length": hf["max_position_embeddings"],
            "emb_dim": hf["hidden_size"],
            "n_heads": heads,
            "n_kv_heads": hf.get("num_key_value_heads") or heads,
            "head_dim": hf.get("head_dim") or default_head_dim,
            "n_layers": hf["num_hidden_layers"],
            "hidden_dim": hf["intermediate_size"],
            "pos": "rope",
            "norm": "rmsnorm",
            "mlp": "swiglu",
            "bias": False,
            "qkv_bias": kind == "qwen2",
            "qk_norm": kind == "qwen3",
            "norm_eps": float(hf.get("rms_norm_eps", 1e-6)),
            "rope_theta": theta,
            "rope_scaling": scaling,
            "tie_embeddings": bool(hf.get("tie_word_embeddings", False)),
        },
        source=where,
    )


def hf_family(config: ModelConfig) -> str:
    """The Hugging Face architecture that computes what ``config`` does: gpt2, llama, qwen2 or qwen3."""
    c = config
    if c.pos == "learned" and c.norm == "layernorm" and c.mlp == "gelu":
        if c.n_kv_heads == c.n_heads and c.attn_dim == c.emb_dim and not c.qk_norm:
            return "gpt2"  # missing biases are written as zeros, which computes the same
    elif c.pos == "rope" and c.norm == "rmsnorm" and c.mlp == "swiglu" and not c.bias:
        if c.qk_norm and not c.qkv_bias:
            return "qwen3"
        if c.qkv_bias and not c.qk_norm:
            return "qwen2"
        if not c.qkv_bias and not c.qk_norm:
            return "llama"
    raise ScratchLLMError(
        f"no Hugging Face architecture matches this model (pos={c.pos}, norm={c.norm}, mlp={c.mlp}, "
        f"bias={c.bias}, qkv_bias={c.qkv_bias}, qk_norm={c.qk_norm}, n_kv_heads={c.n_kv_heads}, "
        f"head_dim={c.head_dim}); GPT-2 needs learned/layernorm/gelu and full heads, the Llama family "
        "rope/rmsnorm/swiglu without biases"
    )


def hf_config_from(config: ModelConfig) -> dict[str, Any]:
    """The ``config.json`` transformers needs to build the same model (with ``architectures``)."""
    c = config
    kind = hf_family(c)
    if kind == "gpt2":
        return {
            "architectures": [ARCHITECTURES[kind]],
            "model_type": kind,
            "vocab_size": c.vocab_size,
            "n_positions": c.context_length,
            "n_ctx": c.context_length,
            "n_embd": c.emb_dim,
            "n_layer": c.n_layers,
            "n_head": c.n_heads,
            "n_inner": c.hidden_dim,
            "activation_function": "gelu_new",
            "resid_pdrop": c.drop_rate,
            "embd_pdrop": c.drop_rate,
            "attn_pdrop": c.drop_rate,
            "layer_norm_epsilon": c.norm_eps,
            "initializer_range": 0.02,
            "scale_attn_weights": True,
            "tie_word_embeddings": c.tie_embeddings,
            "bos_token_id": min(50256, c.vocab_size - 1),  # GPT-2's <|endoftext|>
            "eos_token_id": min(50256, c.vocab_size - 1),
        }
    hf: dict[str, Any] = {
        "architectures": [ARCHITECTURES[kind]],
        "model_type": kind,
        "vocab_size": c.vocab_size,
        "hidden_size": c.emb_dim,
        "intermediate_size": c.hidden_dim,
        "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_kv_heads,
        "head_dim": c.head_dim,
        "max_position_embeddings": c.context_length,
        "rms_norm_eps": c.norm_eps,
        "rope_theta": c.rope_theta,
        "rope_scaling": dict(c.rope_scaling) if c.rope_scaling else None,
        "hidden_act": "silu",
        "attention_dropout": c.drop_rate,
        "initializer_range": 0.02,
        "tie_word_embeddings": c.tie_embeddings,
    }
    if kind == "llama":
        hf.update(attention_bias=False, mlp_bias=False)
    else:
        hf.update(use_sliding_window=False, max_window_layers=c.n_layers)
        if kind == "qwen3":
            hf["attention_bias"] = False
    return hf


# ---------------------------------------------------------------------------------------- names
@dataclass(frozen=True)
class Piece:
    """One Hugging Face tensor: its name, its rows in our (possibly fused) tensor, whether stored transposed."""

    name: str
    rows: int
    transposed: bool = False


def hf_layout(config: ModelConfig) -> dict[str, list[Piece]]:
    """For each tensor of our state dict (tied LM head left out), the Hugging Face tensors that make it up.

    For GPT-2 every bias is listed even when the config has none (GPT-2 always stores them).
    """
    kind = hf_family(config)
    if kind == "gpt2":
        config = dataclasses.replace(config, bias=True, qkv_bias=True)
    shapes = _our_shapes(config)
    layout: dict[str, list[Piece]] = {}
    for ours, shape in shapes.items():
        if kind == "gpt2":
            layout[ours] = [_gpt2_piece(ours, shape)]
        elif ours in LLAMA_TOP.values() or ours == "lm_head.weight":
            hf = {v: k for k, v in LLAMA_TOP.items()}.get(ours, ours)
            layout[ours] = [Piece(hf, shape[0])]
        else:
            _, layer, suffix = ours.split(".", 2)
            names = [f"model.layers.{layer}.{name}" for name in LLAMA_BLOCK[suffix]]
            if suffix.startswith("att.qkv"):
                q, kv = config.n_heads * config.head_dim, config.n_kv_heads * config.head_dim
                layout[ours] = [Piece(n, rows) for n, rows in zip(names, (q, kv, kv))]
            else:
                layout[ours] = [Piece(n, shape[0] // len(names)) for n in names]
    return layout


def _our_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Our state dict's tensor shapes for ``config`` (built on the meta device: nothing allocated)."""
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in GPTModel(config).state_dict().items()}
    if config.tie_embeddings:
        shapes.pop("lm_head.weight")
    return shapes


def _gpt2_piece(ours: str, shape: tuple[int, ...]) -> Piece:
    if ours == "lm_head.weight":
        return Piece(ours, shape[0])
    for hf, name in GPT2_TOP.items():
        if name == ours:
            return Piece("transformer." + hf, shape[0])
    _, layer, suffix = ours.split(".", 2)
    for hf, (name, transposed) in GPT2_BLOCK.items():
        if name == suffix:
            return Piece(f"transformer.h.{layer}.{hf}", shape[0], transposed and len(shape) == 2)
    raise KeyError(ours)  # every GPT-2-family tensor is in the tables above


def _expected_shape(piece: Piece, ours_shape: tuple[int, ...]) -> list[int]:
    shape = [piece.rows, *ours_shape[1:]]
    return shape[::-1] if piece.transposed else shape


def _normalise_name(name: str, kind: str) -> str:
    """Accept the bare-backbone names some folders use (``h.0...`` for GPT-2, ``layers.0...`` for Llama)."""
    if name == "lm_head.weight":
        return name
    prefix = "transformer." if kind == "gpt2" else "model."
    return name if name.startswith(prefix) else prefix + name


def state_dict_from_hf(tensors: Mapping[str, Tensor], config: ModelConfig, where: str) -> dict[str, Tensor]:
    """Hugging Face names -> our state dict, checking that every tensor is present, expected and of its shape.

    Errors name the tensor as the file does (``model.layers.3.self_attn.k_proj.weight has shape [64, 96],
    expected [32, 96]``).
    """
    kind = hf_family(config)
    given = {
        _normalise_name(name, kind): tensor
        for name, tensor in tensors.items()
        if not name.endswith(_IGNORED_SUFFIXES)
    }
    if config.tie_embeddings:
        given.pop("lm_head.weight", None)  # the embedding itself; some exporters write it anyway
    shapes = _our_shapes(config)
    layout = hf_layout(config)
    wanted = [piece.name for pieces in layout.values() for piece in pieces]
    check_names(wanted, given, where, f" for a {ARCHITECTURES[kind]} with this config")
    state: dict[str, Tensor] = {}
    for ours, pieces in layout.items():
        parts = []
        for piece in pieces:
            tensor, expected = given[piece.name], _expected_shape(piece, shapes[ours])
            if list(tensor.shape) != expected:
                raise ScratchLLMError(
                    f"{where}: tensor {piece.name} has shape {list(tensor.shape)}, expected {expected}"
                )
            parts.append(tensor.t() if piece.transposed else tensor)
        state[ours] = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
    return state


def state_dict_to_hf(model_or_state: nn.Module | Mapping[str, Tensor], config: ModelConfig) -> dict[str, Tensor]:
    """Our model (or state dict) -> tensors under Hugging Face names, each with storage of its own.

    A GPT-2-shaped model without some biases gets zero biases (GPT-2 always has them; zero adds nothing).
    """
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    layout = hf_layout(config)
    dtype = state["tok_emb.weight"].dtype
    tensors: dict[str, Tensor] = {}
    for ours, pieces in layout.items():
        full = state[ours].detach() if ours in state else torch.zeros(pieces[0].rows, dtype=dtype)
        for piece, part in zip(pieces, full.split([p.rows for p in pieces], dim=0)):
            tensors[piece.name] = (part.t() if piece.transposed else part).contiguous().clone()
    return tensors


def model_from_hf_tensors(
    hf_config: Mapping[str, Any],
    tensors: Mapping[str, Tensor],
    where: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> GPTModel:
    """Build our model from a Hugging Face config dict and tensors under Hugging Face names (eval mode)."""
    config = config_from_hf(hf_config, where)
    return build_model(config, state_dict_from_hf(tensors, config, where), where, device, dtype)


# ---------------------------------------------------------------------------------------- folders
def read_hf_tensors(folder: Path) -> tuple[dict[str, Tensor], str]:
    """Every tensor of a Hugging Face folder, and what to call the source in messages.

    Reads ``model.safetensors``, else the shards listed in ``model.safetensors.index.json``, else
    ``pytorch_model.bin`` (tensors only, ``weights_only=True``).
    """
    if (folder / SAFETENSORS_FILE).is_file():
        return load_safetensors(folder / SAFETENSORS_FILE), str(folder / SAFETENSORS_FILE)
    if (folder / INDEX_FILE).is_file():
        return _read_shards(folder), str(folder / INDEX_FILE)
    if (folder / BIN_FILE).is_file():
        path = folder / BIN_FILE
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for corrupt or unsafe files
            raise ScratchLLMError(f"{path}: cannot read ({str(exc).splitlines()[0]})") from None
        if not isinstance(state, dict):
            raise ScratchLLMError(f"{path}: expected a state dict of tensors")
        return state, str(path)
    raise ScratchLLMError(f"{folder}: missing {SAFETENSORS_FILE} (or {INDEX_FILE}, or {BIN_FILE})")


def _read_shards(folder: Path) -> dict[str, Tensor]:
    index_path = folder / INDEX_FILE
    weight_map = read_json(index_path).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ScratchLLMError(f'{index_path}: field "weight_map" must map tensor names to file names')
    tensors: dict[str, Tensor] = {}
    for file_name in sorted(set(weight_map.values())):
        shard = folder / file_name
        if Path(file_name).name != file_name or not shard.is_file():
            raise ScratchLLMError(f"{index_path}: shard {file_name} not found in {folder}")
        tensors.update(load_safetensors(shard))
    for name, file_name in weight_map.items():
        if name not in tensors:
            raise ScratchLLMError(f"{folder / file_name}: tensor {name} listed in {INDEX_FILE} is missing")
    return tensors


def from_hf(folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> GPTModel:
    """Load a Hugging Face GPT-2, Llama, Qwen2 or Qwen3 folder (``config.json`` + weights), in eval mode."""
    folder = check_folder(folder, "a Hugging Face model folder")
    hf_config = read_json(folder / CONFIG_FILE)
    config = config_from_hf(hf_config, str(folder / CONFIG_FILE))  # config errors before reading weights
    tensors, where = read_hf_tensors(folder)
    return build_model(config, state_dict_from_hf(tensors, config, where), where, device, dtype)


def to_hf(
    model: GPTModel, folder: str | Path, extra_files: Mapping[str, Callable[[Path], Any]] | None = None
) -> Path:
    """Write ``model`` as a Hugging Face folder (``config.json`` + ``model.safetensors``) transformers loads.

    The architecture follows the config (:func:`hf_family`). The folder is written atomically, with
    ``extra_files`` (name -> writer(path): ``tokenizer.json``...) in the same step; other files in an existing
    folder (a tokenizer) are kept, stale weight shards are removed.
    """
    tensors = state_dict_to_hf(model, model.config)
    hf_config = hf_config_from(model.config)
    hf_config["torch_dtype"] = str(model.tok_emb.weight.dtype).removeprefix("torch.")
    folder = Path(folder)
    stale: tuple[str, ...] = (INDEX_FILE, BIN_FILE)
    if (folder / INDEX_FILE).is_file():
        weight_map = read_json(folder / INDEX_FILE).get("weight_map")
        stale += tuple(set(weight_map.values())) if isinstance(weight_map, dict) else ()
    return write_folder(
        folder,
        {
            SAFETENSORS_FILE: lambda p: save_safetensors(tensors, p, {"format": "pt"}),
            CONFIG_FILE: json_writer(hf_config),
            **(extra_files or {}),
        },
        drop=stale,
    )
