"""GPT-2 parity: our loader + both encoders give tiktoken's ids, token for token."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from scratchllm.errors import ScratchLLMError
from scratchllm.tokenizer import ENDOFTEXT, load
from scratchllm.tokenizer.bpe import _bpe_merge_heap, bpe_merge
from scratchllm.tokenizer.gpt2 import bytes_to_unicode

ODD_TEXTS = [
    "",
    "Hello world",
    "\n\n\n",
    "   x",
    "\t",
    "\r\n",
    "trailing spaces   ",
    "a\n\n  b \t\n c   \n",
    "  leading and  double  spaces ",
    "I'm we'll they've it's don't 'S 'LL",
    "emoji 😀👍🏽 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵",
    "中文分词测试：你好，世界！混合 English 和 123 数字。",
    "日本語のテキスト、한국어 텍스트, Ελληνικά, русский, العربية",
    "numbers 1234567890 3.14159 1,000,000",
    "\u00a0nbsp\u2003em-space\u3000ideographic\u200bzero-width\u2028line-sep\x0bvt\x0cff\x1c\x1dx",
    "mixed\u0085next-line and \x00 nul and \x7f del",
    'code: def f(x):\n    return {"a": [1, 2]}  # comment\n',
    "combining e\u0301 and a\u0308 and Zalgo t\u0336\u0353e\u0334x\u0337t",
]


def _shared_texts(shared_data: Path) -> list[tuple[str, str]]:
    texts = []
    for path in sorted(shared_data.rglob("*")):
        if path.is_file():
            try:
                texts.append((str(path.relative_to(shared_data)), path.read_text(encoding="utf-8")))
            except UnicodeDecodeError:
                continue
    assert any(name.startswith("gutenberg-zh") for name, _ in texts)
    return texts


def test_loaded_ranks_equal_tiktokens(gpt2_python, tiktoken_gpt2):
    assert gpt2_python.ranks == tiktoken_gpt2._mergeable_ranks
    assert gpt2_python.vocab_size == tiktoken_gpt2.n_vocab == 50257
    assert gpt2_python.eot_id == 50256 == tiktoken_gpt2.eot_token


def test_fast_backend_matches_tiktoken_on_every_shared_file(gpt2_fast, tiktoken_gpt2, shared_data):
    for name, text in _shared_texts(shared_data):
        assert gpt2_fast.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text), name


def test_python_backend_matches_tiktoken_on_every_shared_file(gpt2_python, tiktoken_gpt2, shared_data):
    # the first 60k characters of each file keep this test short; the benchmark covers everything
    for name, text in _shared_texts(shared_data):
        text = text[:60_000]
        assert gpt2_python.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text), name


@pytest.mark.parametrize("text", ODD_TEXTS)
def test_odd_text_matches_tiktoken(gpt2_python, gpt2_fast, tiktoken_gpt2, text):
    expected = tiktoken_gpt2.encode_ordinary(text)
    assert gpt2_python.encode_ordinary(text) == expected
    assert gpt2_fast.encode_ordinary(text) == expected
    assert gpt2_python.decode(expected) == text


def test_random_unicode_matches_tiktoken(gpt2_python, gpt2_fast, tiktoken_gpt2):
    rng = random.Random(0)
    ranges = [
        (0x20, 0x7F),
        (0x00, 0x20),
        (0xA0, 0x250),
        (0x4E00, 0x9FFF),
        (0x1F300, 0x1FAFF),
        (0x3000, 0x303F),
    ]
    ranges += [(0x2000, 0x206F), (0x0590, 0x06FF), (0xAC00, 0xD7A3), (0xE000, 0xE0FF), (0x10000, 0x10FFFF)]
    for _ in range(300):
        chars = []
        for _ in range(rng.randint(0, 80)):
            lo, hi = rng.choice(ranges)
            c = rng.randint(lo, hi)
            if 0xD800 <= c <= 0xDFFF:  # lone surrogates are not valid UTF-8
                continue
            chars.append(chr(c) if rng.random() < 0.8 else rng.choice(" \n\t'"))
        text = "".join(chars)
        expected = tiktoken_gpt2.encode_ordinary(text)
        assert gpt2_python.encode_ordinary(text) == expected, repr(text)
        assert gpt2_fast.encode_ordinary(text) == expected, repr(text)
        assert gpt2_python.decode(expected) == text


def test_lone_surrogate_is_replaced_like_tiktoken(gpt2_python, tiktoken_gpt2):
    text = "a\ud800b"
    assert gpt2_python.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text)


def test_merge_variants_agree(gpt2_python):
    rng = random.Random(1)
    words = "the of 中文 世界 😀 aaaa abab ing tion  \n".split(" ")
    for _ in range(200):
        piece = "".join(rng.choice(words) for _ in range(rng.randint(1, 120))).encode()
        ranks = gpt2_python.ranks
        quadratic = bpe_merge(piece, ranks) if len(piece) <= 256 else None
        heap = _bpe_merge_heap(piece, ranks)
        if quadratic is not None:
            assert heap == quadratic
        # cutting long pieces where no token can cross must not change the result either
        assert gpt2_python._python._encode_piece(piece) == heap
        assert b"".join(gpt2_python.token_bytes(i) for i in heap) == piece


SPECIAL_CASES = [
    ("a<|endoftext|>b", "all", "all"),
    ("<|endoftext|>", {"<|endoftext|>"}, "all"),
    ("x <|endoftext|> y<|endoftext|><|endoftext|>z ", "all", ()),
    ("  <|endoftext|>  ", "all", "all"),
    ("text <|endoftext|> as text", frozenset(), ()),
    ("no specials here", frozenset(), "all"),
    ("<|endoftext", "all", "all"),
]


@pytest.mark.parametrize("text, allowed, disallowed", SPECIAL_CASES)
def test_special_tokens_match_tiktoken(gpt2_python, gpt2_fast, tiktoken_gpt2, text, allowed, disallowed):
    expected = tiktoken_gpt2.encode(text, allowed_special=allowed, disallowed_special=disallowed)
    for tok in (gpt2_python, gpt2_fast):
        assert tok.encode(text, allowed_special=allowed, disallowed_special=disallowed) == expected


@pytest.mark.parametrize("backend", ["python", "tiktoken"])
def test_disallowed_special_raises_naming_the_token(gpt2_python, tiktoken_gpt2, backend):
    tok = gpt2_python.with_backend(backend)
    text = "hello <|endoftext|> world"
    with pytest.raises(ValueError):
        tiktoken_gpt2.encode(text)
    with pytest.raises(ScratchLLMError, match=r"<\|endoftext\|>"):
        tok.encode(text)
    with pytest.raises(ScratchLLMError, match=r"<\|endoftext\|>"):
        tok.encode_batch(["fine", text], num_threads=2)
    assert tok.encode(text, disallowed_special=()) == tiktoken_gpt2.encode_ordinary(text)
    assert tok.encode(text, allowed_special={ENDOFTEXT}).count(50256) == 1


def test_encode_batch_matches_single(gpt2_python, gpt2_fast, tiktoken_gpt2):
    texts = ODD_TEXTS + ["<|endoftext|> in batch"]
    expected = [tiktoken_gpt2.encode(t, allowed_special="all") for t in texts]
    for tok in (gpt2_python, gpt2_fast):
        assert tok.encode_batch(texts, num_threads=2, allowed_special="all") == expected
    plain = ODD_TEXTS
    assert gpt2_fast.encode_batch(plain, num_threads=2) == tiktoken_gpt2.encode_ordinary_batch(plain)


def test_decode_matches_tiktoken_including_invalid_utf8(gpt2_python, tiktoken_gpt2):
    ids = tiktoken_gpt2.encode("😀 中文 done")
    # split in the middle of a multi-byte character: invalid UTF-8 on its own
    for cut in range(len(ids) + 1):
        part = ids[:cut]
        assert gpt2_python.decode(part) == tiktoken_gpt2.decode(part)
        assert gpt2_python.decode_bytes(part) == tiktoken_gpt2.decode_bytes(part)
    for i in (0, 1, 220, 50255, 50256):
        assert gpt2_python.token_bytes(i) == tiktoken_gpt2.decode_single_token_bytes(i)


@pytest.mark.parametrize("bad", [[50257], [-1], [5, 1 << 40]])
def test_decode_out_of_range_is_one_line_error(gpt2_python, bad):
    with pytest.raises(ScratchLLMError, match=r"out of range; expected 0\.\.50256"):
        gpt2_python.decode(bad)


def test_bytes_to_unicode_is_a_printable_bijection():
    mapping = bytes_to_unicode()
    assert len(set(mapping.values())) == 256
    assert mapping[ord(" ")] == "Ġ" and mapping[ord("\n")] == "Ċ" and mapping[ord("A")] == "A"
    assert all(c.isprintable() and not c.isspace() for c in mapping.values())


def test_hugging_face_folder_loads_the_same(gpt2_tokenizer_dir, gpt2_python, tmp_path):
    shutil.copy(gpt2_tokenizer_dir / "encoder.json", tmp_path / "vocab.json")
    shutil.copy(gpt2_tokenizer_dir / "vocab.bpe", tmp_path / "merges.txt")
    tok = load(tmp_path, backend="python")
    assert tok.ranks == gpt2_python.ranks and tok.special_tokens == {ENDOFTEXT: 50256}


def test_save_and_load_roundtrip(gpt2_python, tmp_path):
    out = gpt2_python.save(tmp_path / "tok")
    assert sorted(p.name for p in out.iterdir()) == ["ranks.txt", "scratchllm_tokenizer.json"]
    again = load(out, backend="python")
    assert again.ranks == gpt2_python.ranks and again.pattern == gpt2_python.pattern
    assert again.special_tokens == gpt2_python.special_tokens
    text = "Round trip, 中文 😀\n"
    assert again.encode(text) == gpt2_python.encode(text)
    gpt2_python.save(out)  # overwriting an existing folder works and leaves no temporary folders
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]


def test_mismatched_merges_file_is_reported(gpt2_tokenizer_dir, tmp_path):
    shutil.copy(gpt2_tokenizer_dir / "encoder.json", tmp_path / "encoder.json")
    lines = (gpt2_tokenizer_dir / "vocab.bpe").read_text(encoding="utf-8").split("\n")
    lines[1], lines[2] = lines[2], lines[1]
    (tmp_path / "vocab.bpe").write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(ScratchLLMError, match=r"vocab\.bpe:2: merge"):
        load(tmp_path)


def test_unknown_folder_is_one_line_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ScratchLLMError) as info:
        load(tmp_path)
    message = str(info.value)
    assert (
        "\n" not in message and "encoder.json + vocab.bpe" in message and "vocab.json + merges.txt" in message
    )
    with pytest.raises(ScratchLLMError, match="not found"):
        load(tmp_path / "missing")
