"""llama.cpp's GGUF files, read and written with the ``gguf`` package (llama.cpp's own Python library).

A GGUF file is one header of typed metadata (``llama.block_count``, ``tokenizer.ggml.tokens``...) followed by
tensors under llama.cpp's names (``blk.0.attn_q.weight``), each in a storage type (F32, F16, BF16, or a block
quantisation such as Q8_0 or Q4_K). This module translates both halves into what a Hugging Face folder says:

* metadata -> the ``config.json`` dictionary of ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` /
  ``Qwen3ForCausalLM`` / ``GPT2LMHeadModel`` (:func:`hf_config_from_metadata`);
* tensors -> Hugging Face names, dequantized by ``gguf.quants.dequantize``. llama.cpp's converter *permutes* the
  rows of ``q_proj`` and ``k_proj`` for the ``llama`` architecture (it rotates interleaved pairs, Hugging Face
  rotates halves); we undo that. ``qwen2``/``qwen3`` are stored unpermuted (llama.cpp uses the NeoX rotation for
  them), and GPT-2's ``Conv1D`` weights are stored as ``nn.Linear`` ([out, in]) and transposed back;
* ``tokenizer.ggml.*`` -> our :class:`~scratchllm.tokenizer.hf.HFTokenizer`, via the same constructor that reads
  ``tokenizer.json``; ``tokenizer.chat_template`` -> the chat template.

:func:`write_gguf` goes the other way (F32, F16 or Q8_0), so a model trained here runs in llama.cpp, Ollama and LM
Studio. Everything a user can get wrong is one :class:`ScratchLLMError` line naming the key or tensor.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from scratchllm.errors import ScratchLLMError
from scratchllm.tokenizer.base import Tokenizer
from scratchllm.tokenizer.hf import (
    GPT2_SPLIT,
    LLAMA3_SPLIT,
    QWEN2_SPLIT,
    AddedToken,
    HFTokenizer,
    PreTokenizer,
    byte_level,
    regex_split,
    to_hf_tokenizer,
)

FileType = Literal["f32", "f16", "q8_0"]

# ---------------------------------------------------------------------------------------------- name tables
#: Per-layer names of the Llama family: GGUF suffix -> Hugging Face suffix (after ``model.layers.N.``).
LLAMA_BLOCK = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
LLAMA_TOP = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
GPT2_BLOCK = {
    "attn_norm.weight": "ln_1.weight",
    "attn_norm.bias": "ln_1.bias",
    "attn_qkv.weight": "attn.c_attn.weight",
    "attn_qkv.bias": "attn.c_attn.bias",
    "attn_output.weight": "attn.c_proj.weight",
    "attn_output.bias": "attn.c_proj.bias",
    "ffn_norm.weight": "ln_2.weight",
    "ffn_norm.bias": "ln_2.bias",
    "ffn_up.weight": "mlp.c_fc.weight",
    "ffn_up.bias": "mlp.c_fc.bias",
    "ffn_down.weight": "mlp.c_proj.weight",
    "ffn_down.bias": "mlp.c_proj.bias",
}
GPT2_TOP = {
    "token_embd.weight": "transformer.wte.weight",
    "position_embd.weight": "transformer.wpe.weight",
    "output_norm.weight": "transformer.ln_f.weight",
    "output_norm.bias": "transformer.ln_f.bias",
    "output.weight": "lm_head.weight",
}


@dataclass(frozen=True)
class Family:
    """How one GGUF architecture maps onto one Hugging Face class."""

    hf_class: str
    model_type: str
    block: dict[str, str]
    top: dict[str, str]
    hf_layer_prefix: str
    permute_qk: bool = False  # llama.cpp's llama rows order for q/k
    transposed: tuple[str, ...] = ()  # HF suffixes stored [in, out] by Hugging Face (GPT-2's Conv1D)


FAMILIES = {
    "llama": Family("LlamaForCausalLM", "llama", LLAMA_BLOCK, LLAMA_TOP, "model.layers.", permute_qk=True),
    "qwen2": Family("Qwen2ForCausalLM", "qwen2", LLAMA_BLOCK, LLAMA_TOP, "model.layers."),
    "qwen3": Family("Qwen3ForCausalLM", "qwen3", LLAMA_BLOCK, LLAMA_TOP, "model.layers."),
    "gpt2": Family(
        "GPT2LMHeadModel",
        "gpt2",
        GPT2_BLOCK,
        GPT2_TOP,
        "transformer.h.",
        transposed=("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"),
    ),
}
ARCH_OF_HF_CLASS = {f.hf_class: arch for arch, f in FAMILIES.items()}

#: ``tokenizer.ggml.pre`` -> how that tokenizer splits text, as ``tokenizer.json`` would say it (the arguments
#: of :class:`HFTokenizer`). The regexes are the ones llama.cpp applies for each name (llama-vocab.cpp); Llama 3
#: looks a whole pre-token up before merging (``ignore_merges``), and Qwen2's tokenizer.json normalizes to NFC.
GGUF_PRE: dict[str, dict[str, Any]] = {
    "gpt-2": {"pre_tokenizer": byte_level()},
    "smollm": {
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [{"type": "Digits", "individual_digits": True}, byte_level()],
        }
    },
    "llama-bpe": {
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [regex_split(LLAMA3_SPLIT), byte_level(use_regex=False)]},
        "ignore_merges": True,
    },
    "qwen2": {
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [regex_split(QWEN2_SPLIT), byte_level(use_regex=False)]},
        "normalizer": {"type": "NFC"},
    },
    # llama.cpp's fallback for BPE vocabularies: punctuation runs, GPT-2's regex, digit runs, then 3-digit groups
    "default": {
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                regex_split(r"[\p{P}\$\+<=>\^~\|]+"),
                regex_split(GPT2_SPLIT),
                regex_split(r"\p{N}+"),
                regex_split(r"[0-9][0-9][0-9]"),
                byte_level(use_regex=False),
            ],
        }
    },
}
GGUF_PRE_ALIASES = {"llama3": "llama-bpe", "llama-v3": "llama-bpe", "gpt2": "gpt-2"}

# llama.cpp token types (gguf.TokenType)
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5
_TOKENIZER_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type", "tokenizer.ggml.scores")


@dataclass
class GGUFModel:
    """What a GGUF file holds, in Hugging Face terms."""

    hf_config: dict[str, Any]
    tensors: dict[str, Tensor]
    tokenizer: HFTokenizer
    chat_template: str | None
    metadata: dict[str, Any] = field(repr=False)
    load_seconds: float = 0.0


# ---------------------------------------------------------------------------------------------- reading
@lru_cache(maxsize=1)
def fast_reader_class() -> type:
    """``gguf.GGUFReader`` over a plain array view of its memory map.

    The reader slices its buffer once or twice per metadata value (about 250,000 times for a 49k-token
    vocabulary), and slicing an ``np.memmap`` pays for memmap bookkeeping each time; a plain ``ndarray`` view of
    the same mapping (which keeps the mapping alive) reads the same bytes about 2.5x faster.
    """
    import gguf

    class Reader(gguf.GGUFReader):
        @property
        def data(self) -> np.ndarray:
            return self._buffer

        @data.setter
        def data(self, value: np.ndarray) -> None:
            self._buffer = value.view(np.ndarray)

    return Reader


def _open(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ScratchLLMError(f"{path}: GGUF file not found")
    try:
        return fast_reader_class()(path, "r")
    except Exception as exc:  # the reader raises ValueError/IndexError/... on truncated or foreign files
        raise ScratchLLMError(f"{path}: not a readable GGUF file (truncated or corrupt?): {exc}") from None


def _metadata(reader: Any) -> dict[str, Any]:
    """Every key -> its Python value (strings, numbers, lists)."""
    return {key: f.contents() for key, f in reader.fields.items() if not key.startswith("GGUF.")}


def _need(meta: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...] = (int, float)) -> Any:
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ScratchLLMError(f"{where}: metadata key {key!r} missing or of the wrong type (got {value!r})")
    return value


def _f32(value: float) -> float:
    """A float32 metadata value as the decimal a config.json would say (9.999999747e-06 -> 1e-05)."""
    return float(str(np.float32(value)))


def hf_config_from_metadata(meta: dict[str, Any], where: str = "GGUF") -> dict[str, Any]:
    """The Hugging Face ``config.json`` dictionary the GGUF metadata describes."""
    arch = meta.get("general.architecture")
    if arch not in FAMILIES:
        raise ScratchLLMError(
            f"{where}: general.architecture is {arch!r}; supported: {', '.join(sorted(FAMILIES))}"
        )
    family = FAMILIES[arch]
    vocab_size = meta.get(f"{arch}.vocab_size") or len(meta.get("tokenizer.ggml.tokens") or ())
    if not vocab_size:
        raise ScratchLLMError(f"{where}: neither {arch}.vocab_size nor tokenizer.ggml.tokens gives the vocabulary size")
    config: dict[str, Any] = {"architectures": [family.hf_class], "model_type": family.model_type}
    key = f"{arch}.{{}}".format
    hidden = _need(meta, key("embedding_length"), where, int)
    heads = _need(meta, key("attention.head_count"), where, int)
    layers = _need(meta, key("block_count"), where, int)
    if arch == "gpt2":
        config |= {
            "n_embd": hidden,
            "n_layer": layers,
            "n_head": heads,
            "n_positions": _need(meta, key("context_length"), where, int),
            "n_inner": meta.get(key("feed_forward_length")),
            "layer_norm_epsilon": _f32(_need(meta, key("attention.layer_norm_epsilon"), where, float)),
            "vocab_size": vocab_size,
        }
    else:
        head_dim = meta.get(key("attention.key_length")) or hidden // heads
        rope_dim = meta.get(key("rope.dimension_count"), head_dim)
        if rope_dim != head_dim:
            raise ScratchLLMError(
                f"{where}: {key('rope.dimension_count')} = {rope_dim} but heads are {head_dim} wide; "
                "partial rotary embeddings are not supported"
            )
        config |= {
            "hidden_size": hidden,
            "intermediate_size": _need(meta, key("feed_forward_length"), where, int),
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": meta.get(key("attention.head_count_kv"), heads),
            "head_dim": head_dim,
            "rms_norm_eps": _f32(_need(meta, key("attention.layer_norm_rms_epsilon"), where, float)),
            "rope_theta": _f32(meta.get(key("rope.freq_base"), 10000.0)),
            "rope_scaling": _rope_scaling(meta, arch),
            "max_position_embeddings": _need(meta, key("context_length"), where, int),
            "vocab_size": vocab_size,
            "hidden_act": "silu",
            "attention_bias": arch == "qwen2",
        }
    for name in ("bos", "eos", "padding"):
        token_id = meta.get(f"tokenizer.ggml.{name}_token_id")
        if token_id is not None:
            config["pad_token_id" if name == "padding" else f"{name}_token_id"] = int(token_id)
    return config


def _rope_scaling(meta: dict[str, Any], arch: str) -> dict[str, Any] | None:
    kind = meta.get(f"{arch}.rope.scaling.type")
    if kind in (None, "none"):
        return None
    scaling: dict[str, Any] = {"rope_type": kind, "factor": _f32(meta.get(f"{arch}.rope.scaling.factor", 1.0))}
    original = meta.get(f"{arch}.rope.scaling.original_context_length")
    if original is not None:
        scaling["original_max_position_embeddings"] = original
    return scaling


#: Llama 3.x's rope_scaling besides ``factor``: every release so far uses these (tried in this order on reading).
LLAMA3_LOW_HIGH = (1.0, 4.0)
LLAMA3_ORIGINAL_CONTEXTS = (8192, 4096, 16384, 32768, 2048, 65536, 131072)
ROPE_FREQS = "rope_freqs.weight"


def llama3_rope_factors(head_dim: int, theta: float, scaling: dict[str, Any]) -> np.ndarray:
    """The per-frequency divisors llama.cpp stores as ``rope_freqs.weight`` for ``rope_scaling`` of type llama3.

    Long wavelengths (beyond ``original / low_freq_factor``) are slowed by ``factor``, short ones (under
    ``original / high_freq_factor``) kept, and the band between blends the two.
    """
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    original = scaling["original_max_position_embeddings"]
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim)
    wavelen = 2 * np.pi / inv_freq.astype(np.float64)
    smooth = (original / wavelen - low) / (high - low)
    blended = 1 / ((1 - smooth) / factor + smooth)
    factors = np.where(wavelen < original / high, 1.0, np.where(wavelen > original / low, factor, blended))
    return factors.astype(np.float32)


def _llama3_scaling(freqs: np.ndarray, head_dim: int, theta: float, where: str) -> dict[str, Any] | None:
    """Recover the ``rope_scaling`` dictionary a ``rope_freqs.weight`` tensor was made from (None: no scaling)."""
    if np.all(freqs == 1):
        return None
    low, high = LLAMA3_LOW_HIGH
    for original in LLAMA3_ORIGINAL_CONTEXTS:
        scaling = {
            "rope_type": "llama3",
            "factor": _f32(float(freqs.max())),
            "low_freq_factor": low,
            "high_freq_factor": high,
            "original_max_position_embeddings": original,
        }
        if freqs.shape == (head_dim // 2,) and np.allclose(
            llama3_rope_factors(head_dim, theta, scaling), freqs, rtol=1e-5, atol=0
        ):
            return scaling
    raise ScratchLLMError(
        f"{where}: tensor {ROPE_FREQS!r} is not Llama 3's rope scaling with low/high factors {LLAMA3_LOW_HIGH} "
        f"and an original context in {LLAMA3_ORIGINAL_CONTEXTS}"
    )


def _tokenizer_from_metadata(meta: dict[str, Any], where: str) -> HFTokenizer:
    """Our tokenizer from ``tokenizer.ggml.*``: control tokens become special, user-defined ones added."""
    model = meta.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise ScratchLLMError(
            f"{where}: tokenizer.ggml.model is {model!r}; expected 'gpt2' (byte-level BPE, the only kind supported)"
        )
    if meta.get("tokenizer.ggml.add_space_prefix"):
        raise ScratchLLMError(f"{where}: tokenizer.ggml.add_space_prefix = true is not supported for byte-level BPE")
    tokens = _need(meta, "tokenizer.ggml.tokens", where, list)
    merges = _need(meta, "tokenizer.ggml.merges", where, list)
    types = meta.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens)
    if len(types) != len(tokens):
        raise ScratchLLMError(f"{where}: tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens")
    pre = meta.get("tokenizer.ggml.pre", "default")
    pre = GGUF_PRE_ALIASES.get(pre, pre)
    if pre not in GGUF_PRE:
        raise ScratchLLMError(
            f"{where}: tokenizer.ggml.pre is {pre!r}; supported: {', '.join(sorted(GGUF_PRE))}"
        )
    splitting = copy.deepcopy(GGUF_PRE[pre])
    added = [
        AddedToken(tok, i, special=kind == CONTROL)
        for i, (tok, kind) in enumerate(zip(tokens, types))
        if kind in (CONTROL, USER_DEFINED)
    ]

    def token(key: str) -> str | None:
        i = meta.get(f"tokenizer.ggml.{key}_token_id")
        if i is None:
            return None
        if not 0 <= i < len(tokens):
            raise ScratchLLMError(f"{where}: tokenizer.ggml.{key}_token_id = {i} is outside 0..{len(tokens) - 1}")
        return tokens[i]

    return HFTokenizer(
        {tok: i for i, tok in reversed(list(enumerate(tokens)))},  # first spelling wins on duplicates
        [_merge_pair(m, i, where) for i, m in enumerate(merges)],
        added_tokens=added,
        **splitting,
        bos_token=token("bos"),
        eos_token=token("eos"),
        pad_token=token("padding"),
        add_bos_token=bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        chat_template=meta.get("tokenizer.chat_template"),
        where=where,
    )


def _merge_pair(merge: Any, i: int, where: str) -> tuple[str, str]:
    parts = merge.split(" ") if isinstance(merge, str) else []
    if len(parts) != 2:
        raise ScratchLLMError(f"{where}: tokenizer.ggml.merges[{i}] must be 'a b', got {merge!r}")
    return parts[0], parts[1]


def gguf_tokenizer(path: str | Path) -> HFTokenizer:
    """Only the tokenizer (and its chat template) of a GGUF file, without touching the weights."""
    meta = _metadata(_open(path))
    return _tokenizer_from_metadata(meta, str(path))


def _hf_name(name: str, family: Family, where: str) -> str:
    if name in family.top:
        return family.top[name]
    if name.startswith("blk."):
        layer, _, suffix = name[4:].partition(".")
        if layer.isdigit() and suffix in family.block:
            return f"{family.hf_layer_prefix}{layer}.{family.block[suffix]}"
    raise ScratchLLMError(f"{where}: tensor {name!r} is not part of a {family.hf_class} (unexpected name)")


def _permute_rows(w: Tensor, heads: int, undo: bool) -> Tensor:
    """llama.cpp's q/k row order: per head, rows ``[0, h/2, 1, h/2+1, ...]`` (interleaved pairs) instead of halves."""
    rows = w.shape[0]
    split = (heads, 2, rows // heads // 2) if not undo else (heads, rows // heads // 2, 2)
    return w.reshape(*split, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def _qk_heads(hf_name: str, config: dict[str, Any]) -> int | None:
    """Heads to (un)permute for a q/k weight or bias, None for every other tensor."""
    if ".self_attn.q_proj." in hf_name:
        return config["num_attention_heads"]
    if ".self_attn.k_proj." in hf_name:
        return config["num_key_value_heads"]
    return None


def expected_shapes(hf_config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Hugging Face name -> shape of every tensor a complete model of this config has.

    Biases only for Qwen2 (and GPT-2), q/k norms only for Qwen3, ``lm_head`` only when untied.
    """
    arch = ARCH_OF_HF_CLASS.get((hf_config.get("architectures") or [None])[0])
    if arch is None:
        raise ScratchLLMError(f"config: architectures {hf_config.get('architectures')!r} cannot be written to GGUF")
    c = hf_config
    if arch == "gpt2":
        n, inner = c["n_embd"], c.get("n_inner") or 4 * c["n_embd"]
        top = {"transformer.wte.weight": (c["vocab_size"], n), "transformer.wpe.weight": (c["n_positions"], n),
               "transformer.ln_f.weight": (n,), "transformer.ln_f.bias": (n,)}
        block = {"ln_1.weight": (n,), "ln_1.bias": (n,), "attn.c_attn.weight": (n, 3 * n), "attn.c_attn.bias": (3 * n,),
                 "attn.c_proj.weight": (n, n), "attn.c_proj.bias": (n,), "ln_2.weight": (n,), "ln_2.bias": (n,),
                 "mlp.c_fc.weight": (n, inner), "mlp.c_fc.bias": (inner,), "mlp.c_proj.weight": (inner, n),
                 "mlp.c_proj.bias": (n,)}
        tied = c.get("tie_word_embeddings", True)
        layers, prefix = c["n_layer"], "transformer.h."
    else:
        if arch != "qwen2" and c.get("attention_bias"):
            raise ScratchLLMError(f"config: attention_bias=true is not supported for {FAMILIES[arch].hf_class}")
        h, f, heads = c["hidden_size"], c["intermediate_size"], c["num_attention_heads"]
        d = c.get("head_dim") or h // heads
        q, kv = heads * d, (c.get("num_key_value_heads") or heads) * d
        top = {"model.embed_tokens.weight": (c["vocab_size"], h), "model.norm.weight": (h,)}
        block = {"input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,),
                 "self_attn.q_proj.weight": (q, h), "self_attn.k_proj.weight": (kv, h),
                 "self_attn.v_proj.weight": (kv, h), "self_attn.o_proj.weight": (h, q),
                 "mlp.gate_proj.weight": (f, h), "mlp.up_proj.weight": (f, h), "mlp.down_proj.weight": (h, f)}
        if arch == "qwen2":
            block |= {"self_attn.q_proj.bias": (q,), "self_attn.k_proj.bias": (kv,), "self_attn.v_proj.bias": (kv,)}
        if arch == "qwen3":
            block |= {"self_attn.q_norm.weight": (d,), "self_attn.k_norm.weight": (d,)}
        tied = c.get("tie_word_embeddings", False)
        layers, prefix = c["num_hidden_layers"], "model.layers."
    if not tied:
        top["lm_head.weight"] = top["transformer.wte.weight" if arch == "gpt2" else "model.embed_tokens.weight"]
    return top | {f"{prefix}{i}.{name}": shape for i in range(layers) for name, shape in block.items()}


def check_tensors(hf_config: dict[str, Any], tensors: dict[str, Tensor], where: str) -> None:
    """Every tensor the config needs is there with its shape (the first problem as one line)."""
    for name, shape in expected_shapes(hf_config).items():
        if name not in tensors:
            missing = sum(n not in tensors for n in expected_shapes(hf_config))
            raise ScratchLLMError(f"{where}: tensor {name!r} is missing ({missing} missing in all)")
        if tuple(tensors[name].shape) != shape:
            raise ScratchLLMError(
                f"{where}: tensor {name!r} has shape {tuple(tensors[name].shape)}, expected {shape} from the config"
            )


def read_gguf(path: str | Path, dtype: torch.dtype = torch.float32) -> GGUFModel:
    """Read a GGUF file: HF-style config, dequantized tensors under HF names, our tokenizer, the chat template.

    Args:
        path: the ``.gguf`` file.
        dtype: ``torch.float32`` (exact dequantisation) or ``torch.bfloat16`` (half the memory).
    """
    import gguf

    if dtype not in (torch.float32, torch.bfloat16):
        raise ScratchLLMError(f"dtype: expected torch.float32 or torch.bfloat16, got {dtype}")
    start = time.perf_counter()
    where = str(path)
    reader = _open(path)
    meta = _metadata(reader)
    config = hf_config_from_metadata(meta, where)
    family = FAMILIES[meta["general.architecture"]]
    tokenizer = _tokenizer_from_metadata(meta, where)
    tensors: dict[str, Tensor] = {}
    for info in reader.tensors:
        name = ROPE_FREQS if info.name == ROPE_FREQS and family.permute_qk else _hf_name(info.name, family, where)
        try:
            values = gguf.quants.dequantize(info.data, info.tensor_type)
        except NotImplementedError:
            raise ScratchLLMError(
                f"{where}: tensor {info.name!r} is stored as {info.tensor_type.name}, which the gguf package "
                "cannot dequantize"
            ) from None
        shape = tuple(int(n) for n in reversed(info.shape))
        if values.size != int(np.prod(shape)):
            raise ScratchLLMError(f"{where}: tensor {info.name!r} holds {values.size} values, expected {shape}")
        if not values.flags.writeable:  # F32 comes back as a view of the read-only file
            values = values.copy()
        t = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32).reshape(shape))
        heads = _qk_heads(name, config) if family.permute_qk else None
        if heads is not None:
            t = _permute_rows(t, heads, undo=True)
        if name.endswith(family.transposed):
            t = t.T
        tensors[name] = t.to(dtype).contiguous()
    if ROPE_FREQS in tensors:
        freqs = tensors.pop(ROPE_FREQS).float().numpy()
        config["rope_scaling"] = _llama3_scaling(freqs, config["head_dim"], config["rope_theta"], where)
    config["tie_word_embeddings"] = "lm_head.weight" not in tensors
    check_tensors(config, tensors, where)
    meta = {k: v for k, v in meta.items() if k not in _TOKENIZER_ARRAYS}
    chat_template = tokenizer.chat_template
    return GGUFModel(config, tensors, tokenizer, chat_template, meta, time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------- writing
def _pre_name(tokenizer: HFTokenizer) -> str:
    """The ``tokenizer.ggml.pre`` name llama.cpp knows for this pre-tokenizer."""
    mine = tokenizer.pre_tokenizer.signature
    for name, splitting in GGUF_PRE.items():
        if PreTokenizer(splitting["pre_tokenizer"], name).signature == mine:
            return name
    raise ScratchLLMError(
        f"tokenizer: its pre-tokenizer {tokenizer.pre_tokenizer.spec!r} has no llama.cpp name; "
        f"expected one of {', '.join(GGUF_PRE)}"
    )


def _write_tokenizer(writer: Any, tokenizer: HFTokenizer, chat_template: str | None, vocab_size: int) -> None:
    """``tokenizer.ggml.*``; a model with more embedding rows than tokens gets ``[PADn]`` tokens, as llama.cpp's
    converter does, because llama.cpp expects one token per row."""
    if vocab_size < tokenizer.vocab_size:
        raise ScratchLLMError(
            f"config: vocab_size {vocab_size} is smaller than the tokenizer's {tokenizer.vocab_size} ids"
        )
    tokens: list[str | None] = [None] * tokenizer.vocab_size + [f"[PAD{i}]" for i in range(tokenizer.vocab_size, vocab_size)]
    types = [NORMAL] * tokenizer.vocab_size + [UNUSED] * (vocab_size - tokenizer.vocab_size)
    for text, i in tokenizer.vocab.items():
        tokens[i] = text
    for t in tokenizer.added_tokens:
        tokens[t.id] = t.content
        types[t.id] = CONTROL if t.special else USER_DEFINED
    if None in tokens:
        raise ScratchLLMError(f"tokenizer: id {tokens.index(None)} has no token; GGUF needs ids without holes")
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_name(tokenizer))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([f"{a} {b}" for a, b in tokenizer.merges])
    for key, token_id in (("bos", tokenizer.bos_id), ("eos", tokenizer.eos_id), ("pad", tokenizer.pad_id)):
        if token_id is not None:
            getattr(writer, f"add_{key}_token_id")(token_id)
    writer.add_add_bos_token(tokenizer.add_bos_token)
    if chat_template:
        writer.add_chat_template(chat_template)


def _write_config(writer: Any, arch: str, c: dict[str, Any], vocab_size: int) -> None:
    def need(key: str) -> Any:
        if c.get(key) is None:
            raise ScratchLLMError(f"config: field {key!r} is missing (needed to write a {arch} GGUF)")
        return c[key]

    if arch == "gpt2":
        writer.add_context_length(need("n_positions"))
        writer.add_embedding_length(need("n_embd"))
        writer.add_feed_forward_length(c.get("n_inner") or 4 * c["n_embd"])
        writer.add_block_count(need("n_layer"))
        writer.add_head_count(need("n_head"))
        writer.add_layer_norm_eps(c.get("layer_norm_epsilon", 1e-5))
    else:
        heads = need("num_attention_heads")
        head_dim = c.get("head_dim") or need("hidden_size") // heads
        writer.add_context_length(need("max_position_embeddings"))
        writer.add_embedding_length(need("hidden_size"))
        writer.add_feed_forward_length(need("intermediate_size"))
        writer.add_block_count(need("num_hidden_layers"))
        writer.add_head_count(heads)
        writer.add_head_count_kv(c.get("num_key_value_heads") or heads)
        writer.add_rope_freq_base(c.get("rope_theta", 10000.0))
        writer.add_layer_norm_rms_eps(need("rms_norm_eps"))
        writer.add_rope_dimension_count(head_dim)
        if head_dim != c["hidden_size"] // heads:
            writer.add_key_length(head_dim)
            writer.add_value_length(head_dim)
        scaling = c.get("rope_scaling")
        kind = (scaling or {}).get("rope_type") or (scaling or {}).get("type")
        if kind == "llama3" and arch == "llama":  # written as the rope_freqs.weight tensor
            for key in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
                if not isinstance(scaling.get(key), (int, float)):
                    raise ScratchLLMError(f"config: rope_scaling.{key} missing (needed for llama3 scaling)")
        elif scaling and kind != "default":
            if kind not in ("linear", "yarn"):
                raise ScratchLLMError(
                    f"config: rope_scaling of type {kind!r} cannot be written to a {arch} GGUF (linear, yarn, llama3)"
                )
            writer.add_rope_scaling_type(gguf_rope_type(kind))
            writer.add_rope_scaling_factor(scaling["factor"])
            if "original_max_position_embeddings" in scaling:
                writer.add_rope_scaling_orig_ctx_len(scaling["original_max_position_embeddings"])
    writer.add_vocab_size(vocab_size)


def gguf_rope_type(kind: str) -> Any:
    import gguf

    return gguf.RopeScalingType.LINEAR if kind == "linear" else gguf.RopeScalingType.YARN


def _storage(values: np.ndarray, file_type: FileType) -> tuple[np.ndarray, Any]:
    """The bytes and type one tensor is stored in: vectors stay F32 (as llama.cpp does); Q8_0 needs rows of 32."""
    import gguf

    kind = gguf.GGMLQuantizationType
    if values.ndim == 1 or file_type == "f32":
        return values.astype(np.float32), kind.F32
    if file_type == "q8_0" and values.shape[-1] % 32 == 0:
        return gguf.quants.quantize(values.astype(np.float32), kind.Q8_0), kind.Q8_0
    return values.astype(np.float16), kind.F16  # f16, and q8_0 rows that are not whole blocks (llama.cpp does the same)


def write_gguf(
    hf_config: dict[str, Any],
    tensors: dict[str, Tensor],
    tokenizer: Tokenizer,
    chat_template: str | None,
    path: str | Path,
    file_type: FileType = "f16",
) -> Path:
    """Write a GGUF file llama.cpp can run from a Hugging Face config and state dict (HF tensor names).

    The file is written next to ``path`` under a temporary name and renamed when complete. ``tokenizer`` is an
    :class:`HFTokenizer` or our byte-level :class:`~scratchllm.tokenizer.bpe.BPETokenizer` (converted to merges).
    """
    import gguf

    if file_type not in ("f32", "f16", "q8_0"):
        raise ScratchLLMError(f"file_type: expected f32, f16 or q8_0, got {file_type!r}")
    arch = ARCH_OF_HF_CLASS.get((hf_config.get("architectures") or [None])[0])
    if arch is None:
        raise ScratchLLMError(
            f"config: architectures {hf_config.get('architectures')!r}; GGUF export supports "
            f"{', '.join(ARCH_OF_HF_CLASS)}"
        )
    family = FAMILIES[arch]
    tok = tokenizer if isinstance(tokenizer, HFTokenizer) else to_hf_tokenizer(tokenizer)
    check_tensors(hf_config, tensors, "tensors")
    expected = list(expected_shapes(hf_config))
    to_gguf = {f"{family.hf_layer_prefix}{{}}.{hf}": g for g, hf in family.block.items()}
    top = {hf: g for g, hf in family.top.items()}

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, arch)
        writer.add_name(str(hf_config.get("_name_or_path") or path.stem))
        file_types = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0"}
        writer.add_file_type(getattr(gguf.LlamaFileType, file_types[file_type]))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        vocab_size = hf_config.get("vocab_size") or tok.vocab_size
        _write_config(writer, arch, hf_config, vocab_size)
        _write_tokenizer(writer, tok, chat_template if chat_template is not None else tok.chat_template, vocab_size)
        for name in expected:
            t = tensors[name].detach().to("cpu", torch.float32)
            if name.endswith(family.transposed):
                t = t.T
            heads = _qk_heads(name, hf_config) if family.permute_qk else None
            if heads is not None:
                t = _permute_rows(t, heads, undo=False)
            if name in top:
                gguf_name = top[name]
            else:
                layer, suffix = name[len(family.hf_layer_prefix) :].split(".", 1)
                gguf_name = "blk." + layer + "." + to_gguf[f"{family.hf_layer_prefix}{{}}.{suffix}"]
            data, kind = _storage(t.contiguous().numpy(), file_type)
            writer.add_tensor(gguf_name, data, raw_dtype=kind)
        scaling = hf_config.get("rope_scaling") or {}
        if arch == "llama" and scaling.get("rope_type", scaling.get("type")) == "llama3":
            head_dim = hf_config.get("head_dim") or hf_config["hidden_size"] // hf_config["num_attention_heads"]
            theta = hf_config.get("rope_theta", 10000.0)
            writer.add_tensor(ROPE_FREQS, llama3_rope_factors(head_dim, theta, scaling))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
