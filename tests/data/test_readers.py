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


def test_expand_inputs_files_folders_globs_in_a_stable_order(tmp_path):
    from scratchllm.data.readers import expand_inputs

    (tmp_path / "b.txt").write_text("b")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.jsonl").write_text('{"text": "a"}\n')
    (tmp_path / "sub" / "notes.md").write_text("skipped by suffix")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "hidden.txt").write_text("skipped: hidden")
    want = [tmp_path / "b.txt", tmp_path / "sub" / "a.jsonl"]
    assert expand_inputs([tmp_path]) == [p.resolve() for p in want]
    # globs recurse with **; a file given twice is read once; order follows the inputs
    assert expand_inputs([str(tmp_path / "sub" / "*.jsonl"), tmp_path / "b.txt", str(tmp_path / "**" / "*.txt")]) == [
        (tmp_path / "sub" / "a.jsonl").resolve(),
        (tmp_path / "b.txt").resolve(),
    ]
    # suffixes=None (the tokenizer trains on any text file) takes notes.md too, still not hidden files
    assert (tmp_path / "sub" / "notes.md").resolve() in expand_inputs([tmp_path], suffixes=None)
    assert not any(".git" in p.parts for p in expand_inputs([tmp_path], suffixes=None))


def test_expand_inputs_errors_name_the_input(tmp_path):
    from scratchllm.data.readers import expand_inputs

    (tmp_path / "empty").mkdir()
    (tmp_path / "e.txt").write_text("")
    (tmp_path / "x.csv").write_text("a")
    cases = [
        (tmp_path / "missing.txt", "missing.txt: no such file or folder"),
        (tmp_path / "*.nothing", r"\*.nothing: the pattern matches no files"),
        (tmp_path / "empty", "empty: folder holds no .txt, .jsonl, .parquet files"),
        (tmp_path / "e.txt", "e.txt: file is empty"),
        (tmp_path / "x.csv", r"x.csv: unsupported file type '.csv'"),
    ]
    for path, message in cases:
        with pytest.raises(ScratchLLMError, match=message):
            expand_inputs([str(path)])
    with pytest.raises(ScratchLLMError, match="no input files given"):
        expand_inputs([])
