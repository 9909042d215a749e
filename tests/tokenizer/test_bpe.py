"""Our BPE trainer and encoder: round trips, backend equality, determinism, files, errors, Chinese."""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import pytest

from dev_deps import require
from scratchllm.errors import ScratchLLMError
from scratchllm.tokenizer import ENDOFTEXT, BPETokenizer, load, train_bpe
from scratchllm.tokenizer.bpe_train import _count_chunk, _split_for_workers, count_pretokens, learn_merges


@pytest.fixture(scope="module")
def english(shared_data: Path) -> str:
    return (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def trained(english: str) -> BPETokenizer:
    return train_bpe(english[:300_000], vocab_size=1024, backend="python")


def _random_text(rng: random.Random, n: int) -> str:
    alphabet = list("abc xyz\n\t  ...,'!?0123") + [
        "é",
        "ß",
        "中",
        "文",
        "😀",
        "👍🏽",
        "\u00a0",
        "\u3000",
        "\r\n",
    ]
    out = []
    for _ in range(n):
        if rng.random() < 0.1:
            c = rng.randint(1, 0x10FFFF)
            if not 0xD800 <= c <= 0xDFFF:  # lone surrogates have no UTF-8 form
                out.append(chr(c))
        else:
            out.append(rng.choice(alphabet))
    return "".join(out)


def test_textbook_example_merges_most_frequent_pair_first():
    # "aaabdaaabac": the most frequent pair is (a, a), then (aa, a) ... as in Wikipedia's BPE example
    ranks, merges = learn_merges({b"aaabdaaabac": 1}, 3)
    assert merges == 3
    assert ranks[b"aa"] == 256
    learned = sorted((r, t) for t, r in ranks.items() if r >= 256)
    assert [t for _, t in learned][0] == b"aa" and len(learned) == 3
    for _, token in learned:
        assert Counter(token).keys() <= set(b"abcd")


def test_vocab_size_is_exact_and_ids_are_contiguous(trained):
    assert trained.vocab_size == 1024
    assert sorted(trained.ranks.values()) == list(range(1023))
    assert trained.special_tokens == {ENDOFTEXT: 1023} and trained.eot_id == 1023
    assert all(trained.ranks[bytes([b])] == b for b in range(256))


def test_round_trip_random_unicode(trained):
    rng = random.Random(0)
    for _ in range(300):
        text = _random_text(rng, rng.randint(0, 120))
        ids = trained.encode_ordinary(text)
        assert trained.decode(ids) == text
        assert all(0 <= i < trained.vocab_size for i in ids)


def test_python_and_tiktoken_backends_agree_on_real_text(trained, shared_data: Path):
    require("tiktoken")
    fast = trained.with_backend("tiktoken")
    assert fast.backend == "tiktoken" and trained.backend == "python"
    texts = [
        (shared_data / "gutenberg-en" / "84-0.txt").read_text(encoding="utf-8")[:200_000],
        (shared_data / "gutenberg-zh" / "23863-0.txt").read_text(encoding="utf-8")[:50_000],
        (shared_data / "llama-factory" / "alpaca_zh_demo.json").read_text(encoding="utf-8")[:50_000],
    ]
    rng = random.Random(1)
    texts += [_random_text(rng, 200) for _ in range(50)]
    for text in texts:
        assert trained.encode_ordinary(text) == fast.encode_ordinary(text)
    special = "one<|endoftext|>two <|endoftext|>"
    assert trained.encode(special, allowed_special="all") == fast.encode(special, allowed_special="all")
    assert trained.encode(special, allowed_special="all").count(1023) == 2


def test_training_learns_frequent_words(trained):
    # whole frequent words of the training text become single tokens
    for word in (" the", " and", " to", " of"):
        assert len(trained.encode_ordinary(word)) == 1, word


_RECORD: dict[str, Path] = {}


def _recording_count_chunk(args):
    """bpe_train's chunk counter, leaving a file named after the process that ran it."""
    (_RECORD["dir"] / f"pid-{os.getpid()}").touch()
    return _count_chunk(args)


def test_training_is_deterministic_and_parallel_counting_equals_serial(english, tmp_path, monkeypatch):
    from scratchllm.tokenizer import bpe_train

    text = english[:400_000] + "<|endoftext|>" + english[400_000:600_000]
    a = train_bpe(text, 700, backend="python")
    b = train_bpe([text], 700, backend="python")
    assert a.ranks == b.ranks
    pattern = a.pattern
    serial = count_pretokens([text], pattern, [ENDOFTEXT], workers=1)
    chunks = _split_for_workers(text, 50_000)
    assert len(chunks) > 5 and "".join(chunks) == text
    assert ENDOFTEXT not in "".join(serial)

    # The real pool: lower its thresholds for this small text and record which process counted each chunk
    # (the workers are forked after the patch, so they run the recording version).
    monkeypatch.setattr(bpe_train, "_PARALLEL_MIN_CHARS", 0)
    monkeypatch.setattr(bpe_train, "_CHUNK_CHARS", 50_000)
    monkeypatch.setattr(bpe_train, "_count_chunk", _recording_count_chunk)
    monkeypatch.setitem(_RECORD, "dir", tmp_path)
    parallel = count_pretokens([text], pattern, [ENDOFTEXT], workers=2)
    workers = {int(p.name.removeprefix("pid-")) for p in tmp_path.glob("pid-*")}
    assert workers and os.getpid() not in workers  # every chunk was counted in a pool process
    assert parallel == serial


def test_special_tokens_are_not_learned_from_text():
    tok = train_bpe(["<|endoftext|>" * 50 + "ab ab ab"], 300, backend="python")
    assert not any(b"<|" in t for t in tok.ranks)


def test_custom_pattern_and_specials(tmp_path):
    tok = train_bpe(
        "aaa bbb aaa bbb", 260, pattern=r"\S+|\s+", special_tokens=["<s>", "</s>"], backend="python"
    )
    assert tok.special_tokens == {"<s>": 258, "</s>": 259} and tok.eot_id is None
    assert tok.encode("<s>aaa</s>", allowed_special="all") == [258, *tok.encode_ordinary("aaa"), 259]
    again = load(tok.save(tmp_path / "t"), backend="python")
    assert (
        again.pattern == r"\S+|\s+"
        and again.ranks == tok.ranks
        and again.special_tokens == tok.special_tokens
    )


def test_small_corpus_gives_smaller_vocab():
    tok = train_bpe("ab", 1000, backend="python")
    assert tok.vocab_size == 258  # 256 bytes + "ab" + <|endoftext|>


@pytest.mark.parametrize("size", [0, 256, 200])
def test_vocab_too_small_is_clear_error(size):
    with pytest.raises(ScratchLLMError, match=r"vocab_size .* too small.*257"):
        train_bpe("hello", size)


def test_bad_utf8_file_names_file_and_offset(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello \xff world")
    with pytest.raises(ScratchLLMError, match=r"bad\.txt: not UTF-8 text \(byte offset 6"):
        train_bpe([bad], 300)
    tok = train_bpe([bad], 300, errors="replace", backend="python")
    assert tok.vocab_size <= 300


def test_invalid_pattern_is_error():
    with pytest.raises(ScratchLLMError, match="pattern"):
        train_bpe("x", 300, pattern="(")


def test_chinese_vocab_beats_gpt2_on_held_out_chinese(shared_data: Path, gpt2_tokenizer_dir: Path):
    files = sorted((shared_data / "gutenberg-zh").glob("*.txt"))
    train_text = files[0].read_text(encoding="utf-8")[20_000:120_000]
    held_out = files[-1].read_text(encoding="utf-8")[50_000:100_000]
    zh = train_bpe(train_text, 1024)
    gpt2 = load(gpt2_tokenizer_dir)
    ours, theirs = len(zh.encode_ordinary(held_out)), len(gpt2.encode_ordinary(held_out))
    assert zh.decode(zh.encode_ordinary(held_out)) == held_out
    assert ours / len(held_out) < theirs / len(held_out)


def _naive_learn(word_counts: dict[bytes, int], num_merges: int) -> dict[bytes, int]:
    """The textbook algorithm: recount every pair of every word for each merge."""
    vocab = [bytes([b]) for b in range(256)]
    ranks = {t: i for i, t in enumerate(vocab)}
    words = {w: list(w) for w in word_counts}
    while len(vocab) < 256 + num_merges:
        pairs: Counter[tuple[int, int]] = Counter()
        for w, ids in words.items():
            for p in zip(ids, ids[1:]):
                pairs[p] += word_counts[w]
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merged = vocab[best[0]] + vocab[best[1]]
        if merged not in ranks:
            ranks[merged] = len(vocab)
            vocab.append(merged)
        for w, ids in words.items():
            out, i = [], 0
            while i < len(ids):
                if i + 1 < len(ids) and (ids[i], ids[i + 1]) == best:
                    out.append(ranks[merged])
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            words[w] = out
    return ranks


def test_incremental_learner_equals_textbook_recount(english):
    counts = count_pretokens([english[:30_000] + "aaaaaaa abab ababab 中文中文"], r"\S+|\s+")
    word_counts = {w.encode(): c for w, c in counts.items()}
    fast, _ = learn_merges(word_counts, 150)
    assert fast == _naive_learn(word_counts, 150)


def test_allowing_an_absent_special_token_is_harmless_like_tiktoken():
    tok = train_bpe("abc abc", 260, special_tokens=["<s>"], backend="python")
    assert tok.encode("abc<s>", allowed_special={"<|endoftext|>", "<s>"}) == [
        *tok.encode_ordinary("abc"),
        259,
    ]
    if tok.with_backend("auto").backend == "tiktoken":
        fast = tok.with_backend("tiktoken")
        assert fast.encode("abc<s>", allowed_special={"<|endoftext|>", "<s>"}) == [
            *tok.encode_ordinary("abc"),
            259,
        ]
