"""Reading .txt files as one document, as paragraphs or as lines; streaming; errors that name the line."""

from __future__ import annotations

import tracemalloc

import pytest

from scratchllm.data.readers import read_documents, read_txt
from scratchllm.errors import ScratchLLMError

TEXT = "\ufeffFirst paragraph,\r\nstill the first.\r\n\r\n   \nSecond one.\n\n\nThird, no newline at the end"


def docs(path, mode):
    return [(d.text, d.where.rsplit(":", 1)[-1], d.nbytes) for d in read_txt(path, documents=mode)]


def test_whole_file_is_one_document_without_the_byte_order_mark(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(TEXT.encode("utf-8"))
    (doc,) = read_documents(path)
    assert doc.text == TEXT[1:] and doc.where == str(path) and doc.nbytes == len(TEXT.encode("utf-8"))


def test_paragraphs_split_on_blank_or_whitespace_lines(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(TEXT.encode("utf-8"))
    assert docs(path, "paragraphs") == [
        (
            "First paragraph,\r\nstill the first.",
            "1",
            len("\ufeffFirst paragraph,\r\nstill the first.\r\n".encode()),
        ),
        ("Second one.", "5", len(b"Second one.\n")),
        ("Third, no newline at the end", "8", len(b"Third, no newline at the end")),
    ]
    assert sum(d[2] for d in docs(path, "paragraphs")) + len(b"\r\n   \n\n\n") == path.stat().st_size


def test_lines_are_documents_and_blank_lines_are_not(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(TEXT.encode("utf-8"))
    assert [(t, line) for t, line, _ in docs(path, "lines")] == [
        ("First paragraph,", "1"),
        ("still the first.", "2"),
        ("Second one.", "5"),
        ("Third, no newline at the end", "8"),
    ]


def test_bad_utf8_names_the_line_and_the_file_offset(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"ok line\n\nfine\nbad \xff byte\n")
    with pytest.raises(ScratchLLMError, match=r"a\.txt:4: not UTF-8 text \(byte offset 18: 0xff\)"):
        list(read_txt(path, documents="paragraphs"))
    texts = [d.text for d in read_txt(path, "replace", documents="lines")]
    assert texts == ["ok line", "fine", "bad \ufffd byte"]


def test_unknown_mode_is_rejected(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(ScratchLLMError, match="txt_documents: expected one of file, paragraphs, lines"):
        list(read_txt(path, documents="sentences"))  # type: ignore[arg-type]


def test_paragraphs_stream_a_large_file_in_bounded_memory(tmp_path):
    path = tmp_path / "corpus.txt"
    paragraph = ("word " * 2000 + "\n") * 5 + "\n"  # ~50 kB
    with path.open("w", encoding="utf-8") as fh:
        for _ in range(400):  # ~20 MB
            fh.write(paragraph)
    size = path.stat().st_size

    def peak(mode: str) -> tuple[int, int]:
        tracemalloc.start()
        count = sum(1 for _ in read_txt(path, documents=mode))
        peak_bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return count, peak_bytes

    count, streamed = peak("paragraphs")
    assert count == 400 and streamed < size / 20
    count, whole = peak("file")
    assert count == 1 and whole > size
