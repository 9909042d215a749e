"""The teaching sliding-window dataset and DataLoader factory."""

from __future__ import annotations

import pytest
import torch

from scratchllm.data.windows import SlidingWindowDataset, create_dataloader
from scratchllm.errors import ScratchLLMError


def test_windows_and_targets():
    ids = list(range(100, 111))  # 11 ids
    ds = SlidingWindowDataset(ids, max_length=4, stride=3)
    # starts 0, 3, 6 (start 6 needs ids up to index 10 for its target: fits); start 9 would not
    assert len(ds) == 3
    x, y = ds[2]
    assert x.tolist() == [106, 107, 108, 109] and y.tolist() == [107, 108, 109, 110]
    assert ds[-1][0].tolist() == x.tolist()
    with pytest.raises(IndexError):
        ds[3]


def test_stride_equal_to_length_uses_each_input_token_once():
    ds = SlidingWindowDataset(torch.arange(21), max_length=5, stride=5)
    inputs = torch.cat([ds[i][0] for i in range(len(ds))])
    assert inputs.tolist() == list(range(20))


def test_too_short_text_is_an_error():
    with pytest.raises(ScratchLLMError, match="text has 4 tokens but one window needs max_length \\+ 1 = 5"):
        SlidingWindowDataset([1, 2, 3, 4], max_length=4, stride=1)


def test_dataloader_on_real_text(shared_data, gpt2_tokenizer_dir):
    from scratchllm.tokenizer import load

    tok = load(gpt2_tokenizer_dir)
    text = (shared_data / "rasbt" / "the-verdict.txt").read_text(encoding="utf-8")
    ids = tok.encode(text)
    assert len(ids) == 5145  # as stated for this file in the shared data provenance
    loader = create_dataloader(text, tok, batch_size=8, max_length=4, stride=4, shuffle=False)
    x, y = next(iter(loader))
    assert x.shape == (8, 4) and x.dtype == torch.long
    assert x[0].tolist() == ids[:4] and y[0].tolist() == ids[1:5] and x[1].tolist() == ids[4:8]
    assert len(loader) == ((5145 - 5) // 4 + 1) // 8

    a = [b[0] for b in create_dataloader(text, tok, batch_size=4, max_length=16, seed=1)]
    b = [b[0] for b in create_dataloader(text, tok, batch_size=4, max_length=16, seed=1)]
    assert all(torch.equal(p, q) for p, q in zip(a, b))

    with pytest.raises(ScratchLLMError, match="one window needs max_length"):
        create_dataloader("Hello world", tok, max_length=256)
