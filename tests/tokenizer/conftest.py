"""Tokenizer fixtures: GPT-2 loaded by us (both backends) and tiktoken's own GPT-2 as the independent reference.

tiktoken cannot download its files here, so the reference is built with tiktoken's *own* loader
(``data_gym_to_mergeable_bpe_ranks``) and its own GPT-2 pattern from the shared ``encoder.json`` + ``vocab.bpe``;
none of our code is involved in it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dev_deps import require
from scratchllm.tokenizer import BPETokenizer, load


@pytest.fixture(scope="session")
def tiktoken_gpt2(gpt2_tokenizer_dir: Path):
    tiktoken = require("tiktoken")
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str

    mp = pytest.MonkeyPatch()
    mp.setenv("TIKTOKEN_CACHE_DIR", "")  # read the local files, cache nothing
    try:
        ranks = data_gym_to_mergeable_bpe_ranks(
            str(gpt2_tokenizer_dir / "vocab.bpe"), str(gpt2_tokenizer_dir / "encoder.json")
        )
    finally:
        mp.undo()
    return tiktoken.Encoding(
        name="gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256}
    )


@pytest.fixture(scope="session")
def gpt2_python(gpt2_tokenizer_dir: Path) -> BPETokenizer:
    tok = load(gpt2_tokenizer_dir, backend="python")
    assert isinstance(tok, BPETokenizer)
    return tok


@pytest.fixture(scope="session")
def gpt2_fast(gpt2_python: BPETokenizer) -> BPETokenizer:
    require("tiktoken")
    return gpt2_python.with_backend("tiktoken")
