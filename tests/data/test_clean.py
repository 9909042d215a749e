"""Cleaning, quality filters and duplicate keys."""

from __future__ import annotations

from scratchllm.data.clean import (
    Filters,
    dedup_key,
    normalize_text,
    repeated_line_ratio,
    sample,
    strip_gutenberg,
    symbol_ratio,
)


def test_normalize_nfc_newlines_and_controls():
    assert normalize_text("Cafe\u0301") == "Caf\u00e9"
    assert normalize_text("a\r\nb\rc") == "a\nb\nc"
    assert normalize_text("x\x00y\x1bz\x7f\x85\tw\n") == "xyz\tw\n"
    assert normalize_text("plain ascii\n") == "plain ascii\n"


def test_strip_gutenberg_real_book(shared_data):
    text = (shared_data / "gutenberg-en" / "2701-0.txt").read_text(encoding="utf-8")
    body = strip_gutenberg(normalize_text(text))
    assert "PROJECT GUTENBERG EBOOK" not in body and "Call me Ishmael" in body
    assert len(body) > 0.95 * len(text.replace("\r", ""))
    assert strip_gutenberg("no markers here") == "no markers here"


def test_symbol_ratio():
    assert symbol_ratio("") == 0.0
    assert symbol_ratio("hello world") == 0.0
    assert symbol_ratio("ab!!") == 0.5
    assert symbol_ratio("中文，") == 1 / 3
    assert symbol_ratio("e\u0301") == 0.0  # combining accents are part of letters


def test_repeated_line_ratio_counts_characters():
    assert repeated_line_ratio("a\nb\n") == 0.0
    assert repeated_line_ratio("long line\nlong line\n\n") == 0.5
    text = "ROMEO:\n" + "\n".join(f"speech number {i} is long and unique" for i in range(5)) + "\nROMEO:\n"
    assert 0 < repeated_line_ratio(text) < 0.05


def test_filters_on_real_texts(shared_data):
    """Default thresholds keep real prose (English, Chinese, a play) and reject junk."""
    filters = Filters()
    for path in ["gutenberg-en/11-0.txt", "gutenberg-zh/23863-0.txt", "tinyshakespeare/input.txt"]:
        assert filters.reject_reason(normalize_text((shared_data / path).read_text(encoding="utf-8"))) is None
    assert filters.reject_reason("   \n") == "min_chars"
    assert filters.reject_reason("<<<>>> {{{}}} ### 1") == "symbol_ratio"
    assert filters.reject_reason("Click here to subscribe now\n" * 10) == "repeated_line_ratio"
    assert Filters(min_chars=10).reject_reason("short") == "min_chars"
    assert Filters(max_symbol_ratio=1.0).reject_reason("!!!!") is None


def test_sample_is_exact_for_short_text_and_bounded_for_long():
    assert sample("abc", 10) == "abc"
    long = "x" * 1000
    assert len(sample(long, 80, pieces=8)) == 80 + 7


def test_dedup_key():
    assert dedup_key("same text\n") == dedup_key("  same text")
    assert dedup_key("same text") != dedup_key("same  text")
    assert len(dedup_key("x")) == 16
