"""``scratchllm tokenizer train|encode|decode`` end to end, including the one-line errors."""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

import pytest

from scratchllm.cli import main
from scratchllm.tokenizer import load


def run(argv: list[str], capsys, monkeypatch, stdin: bytes = b"") -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shared_data: Path) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    (folder / "a.txt").write_text(text[:100_000], encoding="utf-8")
    (folder / "sub").mkdir()
    (folder / "sub" / "b.txt").write_text(text[100_000:150_000] + " 中文 😀", encoding="utf-8")
    return folder


def test_train_encode_decode_round_trip(corpus, tmp_path, capsys, monkeypatch):
    out = tmp_path / "tok"
    code, _, err = run(
        ["tokenizer", "train", "--input", str(corpus), "--vocab-size", "400", "--out", str(out)],
        capsys,
        monkeypatch,
    )
    assert code == 0, err
    assert "training on 2 file(s)" in err
    assert load(out).vocab_size == 400
    text = "To be, or not to be: 中文 😀\n  spaces\t\n"
    code, ids_text, err = run(
        ["tokenizer", "encode", "--tokenizer", str(out)], capsys, monkeypatch, text.encode()
    )
    assert code == 0, err
    ids = [int(x) for x in ids_text.split()]
    assert ids == load(out).encode(text)
    code, decoded, err = run(
        ["tokenizer", "decode", "--tokenizer", str(out)], capsys, monkeypatch, ids_text.encode()
    )
    assert code == 0 and decoded == text


def test_train_with_glob_pattern_and_specials(corpus, tmp_path, capsys, monkeypatch):
    out = tmp_path / "tok"
    argv = [
        "tokenizer",
        "train",
        "--input",
        str(corpus / "**" / "*.txt"),
        "--vocab-size",
        "300",
        "--out",
        str(out),
        "--pattern",
        r"\S+|\s+",
        "--special-tokens",
        "<s>",
        "</s>",
    ]
    code, _, err = run(argv, capsys, monkeypatch)
    assert code == 0, err
    tok = load(out)
    assert tok.special_tokens == {"<s>": 298, "</s>": 299} and tok.pattern == r"\S+|\s+"


def test_encode_show_lists_tokens(gpt2_tokenizer_dir, capsys, monkeypatch):
    argv = ["tokenizer", "encode", "--tokenizer", str(gpt2_tokenizer_dir), "--show", "--specials", "allow"]
    code, out, _ = run(argv, capsys, monkeypatch, "Hello world<|endoftext|>😀".encode())
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "15496\t'Hello'" and lines[1] == "995\t' world'"
    assert lines[2] == "50256\t'<|endoftext|>'  (special)"
    assert lines[3].startswith("47249\tb'") or "\\x" in lines[3]  # part of the emoji's UTF-8 bytes


def _error(argv, capsys, monkeypatch, stdin=b"") -> str:
    code, _, err = run(argv, capsys, monkeypatch, stdin)
    assert code == 2
    # progress lines may come first; the error itself is exactly one line, the last
    last = err.splitlines()[-1]
    assert last.startswith("scratchllm: error: ") and err.endswith(last + "\n") and "Traceback" not in err, (
        err
    )
    return last


def test_one_line_errors(corpus, gpt2_tokenizer_dir, tmp_path, capsys, monkeypatch):
    train = ["tokenizer", "train", "--vocab-size", "300", "--out", str(tmp_path / "o"), "--input"]
    assert "missing.txt: no such file" in _error([*train, str(tmp_path / "missing.txt")], capsys, monkeypatch)
    (tmp_path / "empty.txt").write_text("")
    assert "empty.txt: file is empty" in _error([*train, str(tmp_path / "empty.txt")], capsys, monkeypatch)
    (tmp_path / "bad.txt").write_bytes("ok ü".encode() + b"\xfe rest")
    err = _error([*train, str(tmp_path / "bad.txt")], capsys, monkeypatch)
    assert "bad.txt: not UTF-8 text (byte offset 5" in err and "--errors replace" in err
    code, _, _ = run([*train, str(tmp_path / "bad.txt"), "--errors", "replace"], capsys, monkeypatch)
    assert code == 0
    small = [
        "tokenizer",
        "train",
        "--input",
        str(corpus),
        "--vocab-size",
        "100",
        "--out",
        str(tmp_path / "s"),
    ]
    assert "too small" in _error(small, capsys, monkeypatch)
    assert not (tmp_path / "s").exists()
    assert "not a tokenizer folder" in _error(
        ["tokenizer", "encode", "--tokenizer", str(corpus)], capsys, monkeypatch
    )
    dec = ["tokenizer", "decode", "--tokenizer", str(gpt2_tokenizer_dir)]
    assert "token 2 is 'x1'" in _error(dec, capsys, monkeypatch, b"1 x1 3")
    assert "token 3 is id 50257, out of range; expected 0..50256" in _error(
        dec, capsys, monkeypatch, b"1 2 50257"
    )
    assert "token 1 is id -1" in _error(dec, capsys, monkeypatch, b"-1")
    enc = ["tokenizer", "encode", "--tokenizer", str(gpt2_tokenizer_dir)]
    assert "stdin: not UTF-8 text (byte offset 2" in _error(enc, capsys, monkeypatch, b"ab\xffcd")
    assert "<|endoftext|>" in _error(enc, capsys, monkeypatch, b"a<|endoftext|>")


def test_simple_tokenizer_folder_works_with_cli(tmp_path, capsys, monkeypatch):
    from scratchllm.tokenizer import SimpleTokenizer

    folder = SimpleTokenizer.from_text("Hello, world. Is this-- a test?").save(tmp_path / "simple")
    code, out, _ = run(
        ["tokenizer", "encode", "--tokenizer", str(folder)], capsys, monkeypatch, b"Hello, test?"
    )
    assert code == 0
    code, text, _ = run(
        ["tokenizer", "decode", "--tokenizer", str(folder)], capsys, monkeypatch, out.encode()
    )
    assert text == "Hello, test?"
    shutil.rmtree(folder)
