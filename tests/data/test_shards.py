"""ShardReader: windows, determinism, resume, the distributed slicing rule, and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from scratchllm.data.shards import ShardReader, ShardWriter, load_meta, write_token_dataset
from scratchllm.errors import ScratchLLMError

VOCAB = 1000


@pytest.fixture()
def dataset(tmp_path):
    """Two train shards of a known arithmetic sequence (token i is i % VOCAB) and a short val split."""
    train = [np.arange(0, 700) % VOCAB, np.arange(700, 1500) % VOCAB]
    val = [np.arange(5, 105)]
    write_token_dataset(tmp_path / "ds", {"train": train, "val": val}, vocab_size=VOCAB, shard_tokens=600)
    return tmp_path / "ds"


def test_writer_splits_documents_across_shards_and_hashes(dataset):
    meta = load_meta(dataset)
    shards = meta["splits"]["train"]["shards"]
    assert [s["tokens"] for s in shards] == [600, 600, 300]
    assert meta["splits"]["train"]["tokens"] == 1500 and meta["splits"]["train"]["documents"] == 2
    joined = np.concatenate([np.fromfile(dataset / s["file"], dtype="<u2") for s in shards])
    np.testing.assert_array_equal(joined, np.arange(1500) % VOCAB)
    import hashlib

    for s in shards:
        assert hashlib.sha256((dataset / s["file"]).read_bytes()).hexdigest() == s["sha256"]


def test_uint32_when_vocab_exceeds_uint16(tmp_path):
    meta = write_token_dataset(tmp_path / "big", {"train": [[70000, 1, 2, 3]]}, vocab_size=100_000)
    assert meta["dtype"] == "uint32"
    reader = ShardReader(tmp_path / "big", context_length=2, batch_size=1)
    x, y = reader.next_batch()
    assert x.dtype == torch.int64 and int(x.max()) <= 70000


def test_windows_are_contiguous_and_shifted(dataset):
    reader = ShardReader(dataset, context_length=16, batch_size=8, seed=3)
    for _ in range(5):
        x, y = reader.next_batch()
        assert x.shape == (8, 16) and y.shape == (8, 16) and x.dtype == torch.int64
        assert torch.equal(x[:, 1:], y[:, :-1])
        # every window lies inside one shard of the arithmetic sequence, so consecutive ids differ by 1 mod VOCAB
        assert torch.all((y - x) % VOCAB == 1)


def test_random_batches_reproducible_and_seed_dependent(dataset):
    a = ShardReader(dataset, context_length=8, batch_size=4, seed=1)
    b = ShardReader(dataset, context_length=8, batch_size=4, seed=1)
    c = ShardReader(dataset, context_length=8, batch_size=4, seed=2)
    batches_a = [a.next_batch()[0] for _ in range(3)]
    batches_b = [b.next_batch()[0] for _ in range(3)]
    batches_c = [c.next_batch()[0] for _ in range(3)]
    assert all(torch.equal(p, q) for p, q in zip(batches_a, batches_b))
    assert not all(torch.equal(p, q) for p, q in zip(batches_a, batches_c))
    assert not torch.equal(batches_a[0], batches_a[1])


def test_random_starts_cover_every_position(dataset):
    """Uniform over all valid starts of all shards, including the last start of each shard."""
    reader = ShardReader(dataset, context_length=50, batch_size=64, seed=0)
    firsts = set()
    for _ in range(200):
        firsts.update(reader.next_batch()[0][:, 0].tolist())
    # shard 0 holds tokens 0..599 -> starts 0..549; shard 1 600..1199 -> 600..1149; shard 2 1200..1499 -> ..1449
    expected = set(range(0, 550)) | set(range(600, 1150)) | set(range(1200, 1450))
    expected = {t % VOCAB for t in expected}
    assert firsts == expected


def test_sequential_walks_in_order_and_wraps(dataset):
    reader = ShardReader(dataset, "train", context_length=100, batch_size=2, random=False)
    firsts = []
    for _ in range(8):
        x, _ = reader.next_batch()
        firsts += x[:, 0].tolist()
    # windows start at 0,100,..,400 in shard 0 (5), 600..1000 in shard 1 (5), 1200..1300 in shard 2 (2) -> 12
    order = [0, 100, 200, 300, 400, 600, 700, 800, 900, 1000, 1200, 1300]
    assert reader.num_windows == 12
    assert firsts == [t % VOCAB for t in (order + order)[:16]]


def test_resume_from_state_dict(dataset):
    for random in (True, False):
        reader = ShardReader(dataset, context_length=8, batch_size=3, seed=7, random=random)
        for _ in range(4):
            reader.next_batch()
        state = json.loads(json.dumps(reader.state_dict()))  # must survive JSON
        expected = [reader.next_batch() for _ in range(3)]
        fresh = ShardReader(dataset, context_length=8, batch_size=3, seed=7, random=random)
        fresh.load_state_dict(state)
        for x, y in expected:
            fx, fy = fresh.next_batch()
            assert torch.equal(x, fx) and torch.equal(y, fy)


def test_reset_repeats_the_same_batches(dataset):
    reader = ShardReader(dataset, "val", context_length=10, batch_size=2, random=False)
    first = [reader.next_batch()[0] for _ in range(3)]
    reader.reset()
    again = [reader.next_batch()[0] for _ in range(3)]
    assert all(torch.equal(p, q) for p, q in zip(first, again))


@pytest.mark.parametrize("random", [True, False])
def test_rank_slices_concatenate_to_the_single_process_batch(dataset, random):
    world, per_rank = 3, 2
    single = ShardReader(dataset, context_length=12, batch_size=world * per_rank, seed=5, random=random)
    ranks = [
        ShardReader(
            dataset, context_length=12, batch_size=per_rank, seed=5, random=random, rank=r, world_size=world
        )
        for r in range(world)
    ]
    for _ in range(4):
        x, y = single.next_batch()
        parts = [reader.next_batch() for reader in ranks]
        assert torch.equal(torch.cat([p[0] for p in parts]), x)
        assert torch.equal(torch.cat([p[1] for p in parts]), y)


def test_load_state_dict_rejects_other_settings(dataset):
    reader = ShardReader(dataset, context_length=8, batch_size=2, seed=1)
    state = reader.state_dict()
    other = ShardReader(dataset, context_length=8, batch_size=2, seed=2)
    with pytest.raises(ScratchLLMError, match="seed"):
        other.load_state_dict(state)


def test_errors(tmp_path, dataset):
    with pytest.raises(ScratchLLMError, match="no such data folder"):
        ShardReader(tmp_path / "nope", context_length=4, batch_size=1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScratchLLMError, match="meta.json: missing"):
        ShardReader(tmp_path / "empty", context_length=4, batch_size=1)
    with pytest.raises(ScratchLLMError, match="unknown split 'test'"):
        ShardReader(dataset, "test", context_length=4, batch_size=1)
    with pytest.raises(ScratchLLMError, match="no shard with a full window of 701 tokens"):
        ShardReader(dataset, context_length=700, batch_size=1)
    with pytest.raises(ScratchLLMError, match="rank 2 is outside world_size 2"):
        ShardReader(dataset, context_length=4, batch_size=1, rank=2, world_size=2)


def test_checksum_and_size_checks(dataset):
    meta = load_meta(dataset)
    shard = dataset / meta["splits"]["train"]["shards"][1]["file"]
    data = bytearray(shard.read_bytes())
    data[10] ^= 0xFF
    shard.write_bytes(bytes(data))
    ShardReader(dataset, context_length=8, batch_size=1)  # same size: only verify=True notices
    with pytest.raises(ScratchLLMError, match="sha256 does not match"):
        ShardReader(dataset, context_length=8, batch_size=1, verify=True)
    shard.write_bytes(bytes(data[:-2]))
    with pytest.raises(ScratchLLMError, match="truncated"):
        ShardReader(dataset, context_length=8, batch_size=1)


def test_writer_rejects_bad_shard_size(tmp_path):
    with pytest.raises(ScratchLLMError, match="shard_tokens"):
        ShardWriter(tmp_path, "train", np.dtype("<u2"), 0)


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.bin", "sub/train.bin", "..", "", "C:\\x.bin", None])
def test_a_shard_name_that_leaves_its_folder_is_refused(dataset, name):
    meta = json.loads((dataset / "meta.json").read_text())
    meta["splits"]["val"]["shards"][0]["file"] = name
    (dataset / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ScratchLLMError) as info:
        ShardReader(dataset, "train", context_length=8, batch_size=2)  # any split: meta.json is checked whole
    message = str(info.value)
    assert "\n" not in message and "meta.json: split 'val' names shard file" in message
    assert "expected a plain file name" in message


def test_write_token_dataset_replaces_a_folder_only_when_complete(tmp_path, dataset):
    before = load_meta(dataset)
    with pytest.raises(ScratchLLMError, match="token id out of range"):  # fails half-way through
        write_token_dataset(dataset, {"train": [np.arange(10), np.asarray([VOCAB])]}, vocab_size=VOCAB)
    assert load_meta(dataset) == before  # the old dataset is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # and no temporary folder is left
