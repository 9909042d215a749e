"""MixtureReader: source frequencies follow the weights; resume and rank slicing; effective epochs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from scratchllm.data.mixture import MixtureReader, effective_epochs, mixture_report
from scratchllm.data.shards import ShardReader, write_token_dataset
from scratchllm.errors import ScratchLLMError


@pytest.fixture()
def two_sources(tmp_path):
    """A small source of ids 0..99 and a larger one of ids 500..999 (so every row tells where it came from)."""
    a = write_token_dataset(tmp_path / "small", {"train": [np.arange(100)] * 3}, vocab_size=1000)
    b = write_token_dataset(tmp_path / "large", {"train": [np.arange(500, 1000)] * 4}, vocab_size=1000)
    assert a["splits"]["train"]["tokens"] == 300 and b["splits"]["train"]["tokens"] == 2000
    return tmp_path / "small", tmp_path / "large"


def _source_of(x: torch.Tensor) -> np.ndarray:
    small = (x < 100).all(dim=1).numpy()
    large = (x >= 500).all(dim=1).numpy()
    assert np.all(small ^ large), "every row must come from exactly one source"
    return np.where(small, 0, 1)


def test_frequencies_match_weights(two_sources):
    reader = MixtureReader(list(two_sources), [0.7, 0.3], "train", context_length=8, batch_size=32, seed=0)
    rows = np.concatenate([_source_of(reader.next_batch()[0]) for _ in range(100)])
    share = float((rows == 0).mean())
    # 3,200 rows: the standard deviation of the share is sqrt(0.21 / 3200) = 0.008; allow 4 of them
    assert abs(share - 0.7) < 0.033
    assert reader.meta["vocab_size"] == 1000


def test_windows_are_real_and_shifted(two_sources):
    reader = MixtureReader(
        {"s": (two_sources[0], 1), "l": (two_sources[1], 1)}, context_length=16, batch_size=8
    )
    x, y = reader.next_batch()
    assert x.shape == y.shape == (8, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    _source_of(torch.cat([x, y], dim=1))  # each row (inputs and targets) lies in one source
    assert reader.names == ["s", "l"]


def test_resume_reset_and_rank_slices(two_sources):
    kw = dict(context_length=8, seed=4)
    single = MixtureReader(list(two_sources), [1, 1], batch_size=6, **kw)
    first = [single.next_batch()[0] for _ in range(3)]
    state = json.loads(json.dumps(single.state_dict()))
    later = [single.next_batch()[0] for _ in range(2)]

    resumed = MixtureReader(list(two_sources), [1, 1], batch_size=6, **kw)
    resumed.load_state_dict(state)
    assert all(torch.equal(a, resumed.next_batch()[0]) for a in later)
    resumed.reset()
    assert torch.equal(resumed.next_batch()[0], first[0])

    ranks = [
        MixtureReader(list(two_sources), [1, 1], batch_size=2, rank=r, world_size=3, **kw) for r in range(3)
    ]
    for expected in first:
        assert torch.equal(torch.cat([r.next_batch()[0] for r in ranks]), expected)

    with pytest.raises(ScratchLLMError, match="weights"):
        MixtureReader(list(two_sources), [1, 2], batch_size=6, **kw).load_state_dict(state)


def test_readers_as_sources(two_sources):
    readers = [ShardReader(d, context_length=8, batch_size=1, seed=i) for i, d in enumerate(two_sources)]
    mix = MixtureReader([(readers[0], 0.0), (readers[1], 1.0)], batch_size=4)
    assert (_source_of(mix.next_batch()[0]) == 1).all()  # weight 0 never drawn
    sharded = ShardReader(two_sources[0], context_length=8, batch_size=1, rank=1, world_size=2)
    with pytest.raises(ScratchLLMError, match="single-process readers"):
        MixtureReader([(sharded, 1.0)], batch_size=4)


def test_errors(two_sources, tmp_path):
    write_token_dataset(tmp_path / "other", {"train": [np.arange(100)]}, vocab_size=2000)
    with pytest.raises(ScratchLLMError, match="different vocabularies"):
        MixtureReader([two_sources[0], tmp_path / "other"], [1, 1], context_length=8, batch_size=2)
    with pytest.raises(ScratchLLMError, match="2 sources but 1 weights"):
        MixtureReader(list(two_sources), [1], context_length=8, batch_size=2)
    with pytest.raises(ScratchLLMError, match="non-negative"):
        MixtureReader(list(two_sources), [1, -1], context_length=8, batch_size=2)


def test_effective_epochs_gpt3_table():
    """GPT-3 table 2.2: 300B tokens; Common Crawl 410B at 60% -> 0.44 epochs, Books2 55B at 8% -> 0.43."""
    sizes = [410e9, 19e9, 12e9, 55e9, 3e9]
    weights = [0.60, 0.22, 0.08, 0.08, 0.03]  # sums to 1.01 as printed in the paper; normalised here
    epochs = effective_epochs([int(s) for s in sizes], weights, 300e9)
    assert epochs[0] == pytest.approx(0.44, abs=0.01)
    assert epochs[3] == pytest.approx(0.43, abs=0.01)
    assert epochs[4] == pytest.approx(0.03 / 1.01 * 300 / 3)  # the formula itself: weight * total / size
    assert epochs[4] > 2.9 and epochs[0] < 0.5  # small high-quality source seen many times, the crawl < once


def test_effective_epochs_from_folders_and_report(two_sources):
    epochs = effective_epochs(list(two_sources), [0.5, 0.5], 6000)
    assert epochs == pytest.approx([0.5 * 6000 / 300, 0.5 * 6000 / 2000])
    table = mixture_report(["small", "large"], [300, 2000], [1, 1], 6000)
    assert "small" in table and "10.00" in table and "1.50" in table
