"""``KVCache.rows`` with per-row lengths: rows of different lengths decode in one batch exactly as each alone."""

from __future__ import annotations

import pytest
import torch

from serving_doubles import spiky_model


@pytest.mark.parametrize("kind", ["gpt", "llama"])
@pytest.mark.parametrize("sdpa", [True, False])
def test_rows_of_different_lengths_decode_together_like_each_alone(kind: str, sdpa: bool) -> None:
    model = spiky_model(kind)
    for block in model.blocks:
        block.att.use_sdpa = sdpa  # the explicit softmax(q k^T) v path reads the same cache
    sequences = [[5, 17, 99, 3, 42, 7, 1], list(range(30, 42)), [200, 100]]
    cache = model.new_kv_cache(4, max_len=40)
    lengths = torch.zeros(4, dtype=torch.long)
    with torch.no_grad():
        for row, seq in zip([2, 0, 1], sequences):  # any row order: the rows are independent
            model(torch.tensor([seq[:-1]]), kv_cache=cache.rows(row, row + 1))
            lengths[row] = len(seq) - 1
        order = [sequences[1], sequences[2], sequences[0]]  # rows 0, 1, 2
        last = torch.tensor([[seq[-1]] for seq in order])
        batched = model(last, kv_cache=cache.rows(0, 3, lengths=lengths[:3]), last_only=True)[:, -1]
        assert lengths[:3].tolist() == [len(s) for s in order]  # the model advanced every row by one
        for row, seq in enumerate(order):
            alone = model(torch.tensor([seq]))[0, -1]
            torch.testing.assert_close(batched[row], alone, atol=2e-5, rtol=1e-5)
        # a row copied elsewhere continues identically there
        cache.copy_row(0, 3, int(lengths[0]))
        lengths[3] = lengths[0]
        moved = model(torch.tensor([[9]]), kv_cache=cache.rows(3, 4, lengths=lengths[3:4]), last_only=True)[0, -1]
        torch.testing.assert_close(moved, model(torch.tensor([order[0] + [9]]))[0, -1], atol=2e-5, rtol=1e-5)
