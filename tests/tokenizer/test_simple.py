"""The word-level teaching tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from scratchllm.errors import ScratchLLMError
from scratchllm.tokenizer import ENDOFTEXT, SimpleTokenizer, load
from scratchllm.tokenizer.simple import UNK, split_words


@pytest.fixture(scope="module")
def verdict(shared_data: Path) -> str:
    return (shared_data / "rasbt" / "the-verdict.txt").read_text(encoding="utf-8")


def test_split_words_keeps_punctuation_and_drops_space():
    assert split_words('Hello, world. Is this-- a "test"?') == [
        "Hello",
        ",",
        "world",
        ".",
        "Is",
        "this",
        "--",
        "a",
        '"',
        "test",
        '"',
        "?",
    ]


def test_vocabulary_from_text(verdict):
    tok = SimpleTokenizer.from_text(verdict)
    words = set(split_words(verdict))
    assert tok.vocab_size == len(words) + 2
    assert tok.vocab[ENDOFTEXT] == tok.vocab_size - 2 and tok.vocab[UNK] == tok.vocab_size - 1
    assert tok.eot_id == tok.vocab[ENDOFTEXT]
    assert list(tok.vocab) == sorted(words) + [ENDOFTEXT, UNK]


def test_round_trip_of_known_text_and_unknown_words(verdict):
    tok = SimpleTokenizer.from_text(verdict)
    sentence = '"It\'s the last he painted, you know," Mrs. Gisburn said with pardonable pride.'
    # whitespace is not stored, so decoding re-spaces (the book shows this very output)
    assert tok.decode(tok.encode(sentence)) == sentence.replace("\"It's", "\" It' s")
    plain = "I had always thought Jack Gisburn rather a cheap genius, though a good fellow enough."
    assert tok.decode(tok.encode(plain)) == plain
    assert "Hello" not in tok.vocab and "palace" not in tok.vocab
    ids = tok.encode("Hello, do you like the palace?")
    assert ids.count(tok.vocab[UNK]) == 2
    assert tok.decode(ids) == "<|unk|>, do you like the <|unk|>?"


def test_special_token_semantics(verdict):
    tok = SimpleTokenizer.from_text(verdict)
    text = "the end <|endoftext|> the start"
    with pytest.raises(ScratchLLMError, match="endoftext"):
        tok.encode(text)
    ids = tok.encode(text, allowed_special="all")
    assert ids.count(tok.eot_id) == 1
    assert tok.eot_id not in tok.encode(text, disallowed_special=())
    assert tok.encode_batch([text, "the"], allowed_special="all", num_threads=2) == [ids, tok.encode("the")]


def test_save_load_and_errors(verdict, tmp_path):
    tok = SimpleTokenizer.from_text(verdict)
    again = load(tok.save(tmp_path / "s"))
    assert isinstance(again, SimpleTokenizer) and again.vocab == tok.vocab
    assert tok.token_bytes(tok.vocab["the"]) == b"the"
    with pytest.raises(ScratchLLMError, match="out of range"):
        tok.decode([tok.vocab_size])
