"""``save(loaded, out, to)``: write a loaded model, with its tokenizer and chat template, in any format we read.

The inverse of :func:`scratchllm.weights.load`, and what ``scratchllm convert`` runs. A model file without its
tokenizer is of little use, so the tokenizer (and chat template) always travel with the weights:

* ``scratchllm``: our checkpoint folder, the tokenizer in ``OUT/tokenizer``;
* ``hf``: a Hugging Face folder, ``tokenizer.json`` + ``tokenizer_config.json`` (with the chat template) beside
  ``config.json`` + ``model.safetensors``, which transformers loads;
* ``gguf``: one llama.cpp file, the tokenizer as ``tokenizer.ggml.*`` and the template as
  ``tokenizer.chat_template``, weights in F32, F16 or Q8_0.

Every target is written atomically (a folder assembled under a temporary name and renamed, a file likewise).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal

from scratchllm.errors import ScratchLLMError
from scratchllm.tokenizer.base import Tokenizer, write_json
from scratchllm.weights.loading import LoadedModel

Target = Literal["hf", "gguf", "scratchllm"]
TARGETS: tuple[Target, ...] = ("hf", "gguf", "scratchllm")
TOKENIZER_DIR = "tokenizer"


def _with_template(tokenizer: Tokenizer, template: str | None) -> Tokenizer:
    """``tokenizer`` carrying ``template``: as it is when it already does (or there is none), else as an
    :class:`~scratchllm.tokenizer.hf.HFTokenizer` copy (same ids), the kind of tokenizer that stores one."""
    from scratchllm.tokenizer.hf import to_hf_tokenizer

    if template is None or getattr(tokenizer, "chat_template", None) == template:
        return tokenizer
    carrier = copy.copy(to_hf_tokenizer(tokenizer))
    carrier.chat_template = template
    return carrier


def save(loaded: LoadedModel, out: str | Path, to: Target, gguf_type: str = "f16") -> Path:
    """Write ``loaded`` (model, tokenizer, chat template) to ``out`` in format ``to``; return ``out``.

    Args:
        loaded: what :func:`scratchllm.weights.load` returned.
        out: the folder (``scratchllm``, ``hf``) or ``.gguf`` file to write.
        to: ``scratchllm``, ``hf`` or ``gguf``.
        gguf_type: storage of the GGUF weight matrices: ``f32``, ``f16`` or ``q8_0`` (vectors stay F32).
    """
    out = Path(out)
    model, template = loaded.model, loaded.chat_template
    if to == "scratchllm":
        from scratchllm.weights.checkpoint import save_model

        tok = _with_template(loaded.tokenizer, template)
        return save_model(model, out, extra_files={TOKENIZER_DIR: tok.save})
    if to == "hf":
        from scratchllm.tokenizer.hf import CONFIG_FILE as TOKENIZER_CONFIG
        from scratchllm.tokenizer.hf import TOKENIZER_FILE, to_hf_tokenizer
        from scratchllm.weights.hf import to_hf

        tok = _with_template(to_hf_tokenizer(loaded.tokenizer), template)
        files = {
            TOKENIZER_FILE: lambda p: write_json(p, tok.to_json()),
            TOKENIZER_CONFIG: lambda p: write_json(p, tok.config_json()),
        }
        return to_hf(model, out, extra_files=files)
    if to == "gguf":
        from scratchllm.weights.gguf import write_gguf
        from scratchllm.weights.hf import hf_config_from, state_dict_to_hf

        if out.suffix != ".gguf":
            raise ScratchLLMError(f"{out}: a GGUF file's name must end in .gguf")
        hf_config = hf_config_from(model.config)
        hf_config["_name_or_path"] = out.stem
        tensors = state_dict_to_hf(model, model.config)
        return write_gguf(hf_config, tensors, loaded.tokenizer, template, out, gguf_type)  # type: ignore[arg-type]
    raise ScratchLLMError(f"to: expected one of {', '.join(TARGETS)}, got {to!r}")
