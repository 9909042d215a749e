"""The built-in corpus: standard-library docstrings and comments, checked against ast and tokenize."""

from __future__ import annotations

import ast
import io
import json
import tokenize

import pytest

from scratchllm.data.stdlib_corpus import scan_module, stdlib_corpus, stdlib_dir, stdlib_files

MODULES = [
    "json/decoder.py",
    "textwrap.py",
    "argparse.py",
    "collections/__init__.py",
    "dataclasses.py",
    "shlex.py",
]


@pytest.mark.parametrize("module", MODULES)
def test_scanner_agrees_with_ast_and_tokenize(module):
    path = stdlib_dir() / module
    source = path.read_text(encoding="utf-8")
    docstrings, comments = scan_module(source)
    expected = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc and doc.strip():
                expected.append(doc)
    assert sorted(text for _, text in docstrings) == sorted(expected)
    assert len(expected) > 5
    real = {
        tok.start[0]: tok.string
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    assert comments, "every module above has comments"
    for line, text in comments:  # every block starts at a real comment whose text it begins with
        assert text.startswith(real[line].lstrip("#").strip())


def test_file_list_skips_tests_and_is_sorted():
    files = stdlib_files()
    rel = [p.relative_to(stdlib_dir()).as_posix() for p in files]
    assert rel == sorted(rel) and "json/decoder.py" in rel
    assert not any(
        part in ("test", "tests", "site-packages", "idle_test") for r in rel for part in r.split("/")
    )


def test_corpus_file(tmp_path):
    path = stdlib_corpus(tmp_path, max_bytes=200_000)
    docs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    size = sum(len(d["text"].encode()) for d in docs)
    assert 200_000 <= size < 200_000 + max(len(d["text"].encode()) for d in docs) + 1
    assert all(d["text"].strip() for d in docs)
    assert (
        stdlib_corpus(tmp_path / "again", max_bytes=200_000).read_bytes() == path.read_bytes()
    )  # deterministic
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["stdlib_docs.jsonl"]
