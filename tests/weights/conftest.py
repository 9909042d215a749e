"""The reference for the real SmolLM2 file: transformers' own reading of it, loaded once per test session.

transformers reads a GGUF file with the ``gguf`` package, twice (config, then weights), and rebuilds llama.cpp's
tensor-name table once per tensor; on two busy cores that takes 30-40 s. Two speed-only patches, active while it
loads, bring that to about 12 s without changing a value it computes: the name table is cached (a pure function
of architecture and layer count), and the reader slices a plain ``ndarray`` view of the file's memory map
instead of the ``np.memmap`` itself (the same bytes, without memmap's per-slice bookkeeping).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from dev_deps import require


@contextlib.contextmanager
def fast_gguf_reading() -> Iterator[None]:
    """Within this block ``gguf`` reads faster (see the module docstring)."""
    import gguf

    from scratchllm.weights.gguf import fast_reader_class

    reader = fast_reader_class()  # built before the patch, so it subclasses the package's own reader
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gguf, "GGUFReader", reader)
        mp.setattr(gguf, "get_tensor_name_map", functools.lru_cache(gguf.get_tensor_name_map))
        yield


@pytest.fixture(scope="session")
def hf_smollm2(smollm2_gguf: Path) -> Any:
    """transformers' ``LlamaForCausalLM`` from the SmolLM2 GGUF file, fp32 (one load per session)."""
    transformers = require("transformers")
    require("accelerate")
    with fast_gguf_reading():
        model = transformers.AutoModelForCausalLM.from_pretrained(
            smollm2_gguf.parent, gguf_file=smollm2_gguf.name, dtype=torch.float32
        )
    return model.eval()


@pytest.fixture(scope="session")
def hf_smollm2_tokenizer(smollm2_gguf: Path) -> Any:
    """transformers' tokenizer built from the same file."""
    transformers = require("transformers")
    with fast_gguf_reading():
        return transformers.AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)


@pytest.fixture(scope="session")
def smollm2(smollm2_gguf: Path) -> Any:
    """Our :func:`scratchllm.weights.load` of the file (one load per session)."""
    from scratchllm.weights import load

    return load(smollm2_gguf)
