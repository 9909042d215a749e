"""``prepare`` with the real GPT-2 tokenizer: content of the shards, dedup, filters, split, atomicity, errors."""

from __future__ import annotations

import hashlib
import json
import unicodedata

import numpy as np
import pytest

from dev_deps import require
from scratchllm.cli import main
from scratchllm.data.clean import normalize_text
from scratchllm.data.prepare import _ordered_results, prepare
from scratchllm.data.shards import ShardReader
from scratchllm.errors import ScratchLLMError


@pytest.fixture(scope="module")
def tok(gpt2_tokenizer_dir):
    from scratchllm.tokenizer import load

    return load(gpt2_tokenizer_dir)


def _docs(shared_data) -> list[str]:
    """Real, varied documents: SMS messages, an English story and Chinese poems."""
    sms = (shared_data / "sms-spam-collection" / "SMSSpamCollection").read_text(encoding="utf-8").splitlines()
    poems = json.loads(
        (shared_data / "chinese-poetry" / "tangshi_sanbaishou.json").read_text(encoding="utf-8")
    )
    return [line.split("\t", 1)[1] for line in sms[:60]] + ["\n".join(p["paragraphs"]) for p in poems[:20]]


def _write_jsonl(path, texts, field="text"):
    path.write_text(
        "".join(json.dumps({field: t, "id": i}) + "\n" for i, t in enumerate(texts)), encoding="utf-8"
    )
    return path


def _read_split(out, meta, split):
    return np.concatenate(
        [np.fromfile(out / s["file"], dtype="<u2") for s in meta["splits"][split]["shards"]]
        or [np.zeros(0, "<u2")]
    )


def test_shards_hold_each_kept_document_once_followed_by_eot(tmp_path, shared_data, gpt2_tokenizer_dir, tok):
    docs = _docs(shared_data)
    verdict = (shared_data / "rasbt" / "the-verdict.txt").read_text(encoding="utf-8")
    jsonl = _write_jsonl(
        tmp_path / "a.jsonl", docs + [docs[3], "  ", "!!!! ???? ####"]
    )  # dup, empty, symbols
    (tmp_path / "b.txt").write_text(verdict, encoding="utf-8")
    out = tmp_path / "out"
    meta = prepare(
        [str(jsonl), str(tmp_path / "b.txt")],
        gpt2_tokenizer_dir,
        out,
        val_fraction=0.2,
        shard_tokens=1000,
        seed=1,
        progress=False,
    )
    assert meta["documents"]["dropped"] == {
        "min_chars": 1,
        "symbol_ratio": 1,
        "repeated_line_ratio": 0,
        "duplicates": 1,
    }
    kept = docs + [verdict]
    assert meta["documents"]["read"] == len(kept) + 3 and meta["documents"]["kept"] == len(kept)
    assert meta["vocab_size"] == 50257 and meta["eot_id"] == 50256 and meta["dtype"] == "uint16"
    assert meta["sources"][0]["documents"] == len(docs) + 3 and meta["sources"][1]["kept"] == 1

    # Rebuild each split independently from the tokenizer: the documents of that split, in input order.
    train_tokens = _read_split(out, meta, "train")
    val_tokens = _read_split(out, meta, "val")
    expected = {"train": [], "val": []}
    for doc in kept:
        ids = tok.encode_ordinary(normalize_text(doc)) + [tok.eot_id]
        split = "val" if any(np.array_equal(ids, w) for w in _windows(val_tokens, len(ids))) else "train"
        expected[split].append(ids)
    assert 0 < len(expected["val"]) < len(kept)  # both splits got documents
    for split, tokens in (("train", train_tokens), ("val", val_tokens)):
        np.testing.assert_array_equal(tokens, np.concatenate(expected[split]))
        assert meta["splits"][split]["documents"] == len(expected[split])
        assert meta["splits"][split]["tokens"] == tokens.size
    assert int((train_tokens == tok.eot_id).sum() + (val_tokens == tok.eot_id).sum()) == len(kept)
    for shard in meta["splits"]["train"]["shards"]:
        assert shard["tokens"] <= 1000
        assert hashlib.sha256((out / shard["file"]).read_bytes()).hexdigest() == shard["sha256"]
    assert json.loads((out / "meta.json").read_text()) == meta
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # temp folder renamed away

    reader = ShardReader(out, "val", context_length=32, batch_size=2, random=False)
    x, y = reader.next_batch()
    np.testing.assert_array_equal(x[0].numpy(), val_tokens[:32])


def _windows(tokens, n):
    """Every occurrence of a document's ids can only start after an eot (or at 0)."""
    starts = [0] + [i + 1 for i in np.flatnonzero(tokens == 50256)]
    return [tokens[s : s + n] for s in starts if s + n <= tokens.size]


def test_output_does_not_depend_on_workers(tmp_path, shared_data, gpt2_tokenizer_dir):
    files = [
        str(shared_data / "rasbt" / "the-verdict.txt"),
        str(shared_data / "tinyshakespeare" / "input.txt"),
    ]
    jsonl = _write_jsonl(tmp_path / "d.jsonl", _docs(shared_data))
    common = dict(val_fraction=0.1, shard_tokens=50_000, progress=False)
    one = prepare([*files, str(jsonl)], gpt2_tokenizer_dir, tmp_path / "w1", workers=1, **common)
    two = prepare([*files, str(jsonl)], gpt2_tokenizer_dir, tmp_path / "w2", workers=2, **common)
    assert one["splits"] == two["splits"]  # same shard files, token counts and sha256s
    assert len(one["splits"]["train"]["shards"]) > 1


def test_split_is_seeded_by_document(tmp_path, shared_data, gpt2_tokenizer_dir):
    jsonl = _write_jsonl(tmp_path / "d.jsonl", _docs(shared_data))
    a = prepare([jsonl], gpt2_tokenizer_dir, tmp_path / "a", val_fraction=0.3, seed=0, progress=False)
    b = prepare([jsonl], gpt2_tokenizer_dir, tmp_path / "b", val_fraction=0.3, seed=0, progress=False)
    c = prepare([jsonl], gpt2_tokenizer_dir, tmp_path / "c", val_fraction=0.3, seed=5, progress=False)
    assert a["splits"] == b["splits"]
    assert a["splits"]["val"]["shards"][0]["sha256"] != c["splits"]["val"]["shards"][0]["sha256"]
    n = len(_docs(shared_data))
    for meta in (a, c):
        assert meta["splits"]["train"]["documents"] + meta["splits"]["val"]["documents"] == n
        assert 0.1 * n < meta["splits"]["val"]["documents"] < 0.5 * n


def test_single_document_gets_a_val_tail(tmp_path, shared_data, gpt2_tokenizer_dir, tok):
    path = shared_data / "rasbt" / "the-verdict.txt"
    meta = prepare(
        path, gpt2_tokenizer_dir, tmp_path / "o", val_fraction=0.1, progress=False
    )  # one path is fine
    ids = tok.encode_ordinary(path.read_text(encoding="utf-8")) + [tok.eot_id]
    train, val = _read_split(tmp_path / "o", meta, "train"), _read_split(tmp_path / "o", meta, "val")
    assert meta["splits"]["val"]["from_train_tail"] and val.size == int(np.ceil(0.1 * len(ids)))
    np.testing.assert_array_equal(np.concatenate([train, val]), ids)


def test_cleaning_and_gutenberg_strip(tmp_path, gpt2_tokenizer_dir, tok):
    text = (
        "header junk\r\n*** START OF THE PROJECT GUTENBERG EBOOK 1 ***\r\n"
        "Cafe\u0301 \x07bell\x00\tok\r\n*** END OF THE PROJECT GUTENBERG EBOOK 1 ***\r\nlicence text\r\n"
    )
    (tmp_path / "book.txt").write_bytes(text.encode("utf-8"))
    meta = prepare(
        [tmp_path / "book.txt"],
        gpt2_tokenizer_dir,
        tmp_path / "o",
        val_fraction=0,
        strip_gutenberg=True,
        progress=False,
    )
    tokens = _read_split(tmp_path / "o", meta, "train")
    assert (
        tok.decode(tokens.tolist()) == unicodedata.normalize("NFC", "Cafe\u0301 bell\tok\n") + "<|endoftext|>"
    )


def test_parquet_input(tmp_path, gpt2_tokenizer_dir, tok):
    pa = require("pyarrow")
    pq = require("pyarrow.parquet")

    pq.write_table(pa.table({"content": ["first document", None, "second one"]}), tmp_path / "d.parquet")
    meta = prepare(
        [tmp_path / "d.parquet"],
        gpt2_tokenizer_dir,
        tmp_path / "o",
        text_field="content",
        val_fraction=0,
        progress=False,
    )
    tokens = _read_split(tmp_path / "o", meta, "train").tolist()
    assert tokens == tok.encode("first document<|endoftext|>second one<|endoftext|>", allowed_special="all")
    with pytest.raises(ScratchLLMError, match=r"d.parquet: missing text column 'text' \(columns: content\)"):
        prepare([tmp_path / "d.parquet"], gpt2_tokenizer_dir, tmp_path / "p", progress=False)


def test_failure_leaves_no_output(tmp_path, gpt2_tokenizer_dir):
    _write_jsonl(tmp_path / "a.jsonl", ["fine document"] * 3 + ["another"])
    (tmp_path / "b.jsonl").write_text('{"text": "ok"}\n{"text": "broken\n', encoding="utf-8")
    with pytest.raises(ScratchLLMError, match=r"b.jsonl:2: invalid JSON"):
        prepare(
            [tmp_path / "a.jsonl", tmp_path / "b.jsonl"], gpt2_tokenizer_dir, tmp_path / "out", progress=False
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "b.jsonl"]


def test_input_errors_name_the_place(tmp_path, gpt2_tokenizer_dir):
    def run(*paths, **kw):
        return prepare([str(p) for p in paths], gpt2_tokenizer_dir, tmp_path / "out", progress=False, **kw)

    with pytest.raises(ScratchLLMError, match="nope.txt: no such file or folder"):
        run(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(ScratchLLMError, match="empty.txt: file is empty"):
        run(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\u00e9 ok".encode("latin-1"))
    with pytest.raises(
        ScratchLLMError,
        match=r"latin1.txt: not UTF-8 text \(byte offset 3: 0xe9\); pass --encoding-errors replace",
    ):
        run(tmp_path / "latin1.txt")
    (tmp_path / "bad.jsonl").write_bytes(b'{"text": "a"}\n{"text": "\xff"}\n')
    with pytest.raises(ScratchLLMError, match=r"bad.jsonl:2: not UTF-8 text \(byte offset 24: "):
        run(tmp_path / "bad.jsonl")
    (tmp_path / "field.jsonl").write_text('{"text": "a"}\n\n{"body": "b"}\n', encoding="utf-8")
    with pytest.raises(ScratchLLMError, match=r"field.jsonl:3: missing text field 'text' \(fields: 'body'\)"):
        run(tmp_path / "field.jsonl")
    (tmp_path / "list.jsonl").write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(ScratchLLMError, match=r"list.jsonl:1: expected a JSON object"):
        run(tmp_path / "list.jsonl")
    (tmp_path / "short.txt").write_text("tiny", encoding="utf-8")
    with pytest.raises(
        ScratchLLMError, match=r"no documents left after filtering \(1 read; dropped min_chars: 1\)"
    ):
        run(tmp_path / "short.txt", min_chars=100)
    (tmp_path / "x.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(ScratchLLMError, match=r"x.csv: unsupported file type '.csv'"):
        run(tmp_path / "x.csv")
    assert not (tmp_path / "out").exists()

    meta = run(tmp_path / "latin1.txt", encoding_errors="replace", val_fraction=0)
    assert meta["splits"]["train"]["documents"] == 1


def test_existing_output_needs_overwrite(tmp_path, shared_data, gpt2_tokenizer_dir):
    src = shared_data / "rasbt" / "small-text-sample.txt"
    prepare([src], gpt2_tokenizer_dir, tmp_path / "o", progress=False)
    with pytest.raises(ScratchLLMError, match="already exists"):
        prepare([src], gpt2_tokenizer_dir, tmp_path / "o", progress=False)
    prepare([src], gpt2_tokenizer_dir, tmp_path / "o", progress=False, overwrite=True, val_fraction=0)
    assert json.loads((tmp_path / "o" / "meta.json").read_text())["settings"]["val_fraction"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_lookahead_is_bounded():
    """Documents are pulled from the reader at most 2 * workers batches ahead of the results consumed."""
    pulled = []

    def batches():
        for i in range(50):
            pulled.append(i)
            yield ([f"doc {i}"], [0], 1)

    class Result:
        def get(self):
            return []

    class FakePool:
        def apply_async(self, fn, args):
            return Result()

    for consumed, _ in enumerate(_ordered_results(batches(), FakePool(), workers=3), start=1):
        assert len(pulled) - consumed <= 6
    assert consumed == 50


def test_cli_prepare(tmp_path, shared_data, gpt2_tokenizer_dir, capsys):
    src = shared_data / "rasbt" / "small-text-sample.txt"
    code = main(
        [
            "prepare",
            "--input",
            str(src),
            "--tokenizer",
            str(gpt2_tokenizer_dir),
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ]
    )
    out = capsys.readouterr()
    assert code == 0 and "train:" in out.out and (tmp_path / "o" / "meta.json").is_file()
    (tmp_path / "bad.jsonl").write_text("{oops}\n", encoding="utf-8")
    code = main(
        [
            "prepare",
            "--input",
            str(tmp_path / "bad.jsonl"),
            "--tokenizer",
            str(gpt2_tokenizer_dir),
            "--out",
            str(tmp_path / "p"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "bad.jsonl:1: invalid JSON" in err[0]


def test_special_token_text_in_a_document_stays_plain_text(tmp_path, gpt2_tokenizer_dir, tok):
    _write_jsonl(tmp_path / "d.jsonl", ["a <|endoftext|> b"])
    meta = prepare([tmp_path / "d.jsonl"], gpt2_tokenizer_dir, tmp_path / "o", val_fraction=0, progress=False)
    tokens = _read_split(tmp_path / "o", meta, "train").tolist()
    assert tokens == tok.encode_ordinary("a <|endoftext|> b") + [tok.eot_id]
    assert tokens.count(tok.eot_id) == 1  # only the separator we add


def test_cli_prepare_builtin_stdlib_corpus(tmp_path, gpt2_tokenizer_dir, monkeypatch, capsys):
    import scratchllm.data.stdlib_corpus as embedded

    real = embedded.stdlib_corpus
    monkeypatch.setattr(embedded, "stdlib_corpus", lambda out, max_bytes=None: real(out, max_bytes=100_000))
    monkeypatch.setenv("SCRATCHLLM_CACHE", str(tmp_path / "cache"))
    args = ["prepare", "--input", "stdlib", "--tokenizer", str(gpt2_tokenizer_dir), "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "o")]) == 0
    assert "extracting the standard-library corpus" in capsys.readouterr().err
    meta = json.loads((tmp_path / "o" / "meta.json").read_text())
    assert meta["sources"][0]["path"].endswith("stdlib_docs.jsonl") and meta["documents"]["kept"] > 5
    assert main([*args, "--out", str(tmp_path / "p")]) == 0
    assert "extracting" not in capsys.readouterr().err  # second run reuses the cached corpus


def test_fast_and_plain_encoders_agree(shared_data, tok):
    """prepare takes tiktoken's numpy route when available; the plain Python BPE route gives the same ids."""
    from scratchllm.data.prepare import _array_encoder

    text = (shared_data / "rasbt" / "small-text-sample.txt").read_text(
        encoding="utf-8"
    ) + " 中文 <|endoftext|>"
    require("tiktoken")
    python_tok = tok.with_backend("python")
    assert tok.backend == "tiktoken" and python_tok.backend == "python"
    fast, plain = _array_encoder(tok)(text), _array_encoder(python_tok)(text)
    assert fast.dtype == plain.dtype == np.uint16
    assert fast.tolist() == plain.tolist() == tok.encode_ordinary(text)


def test_txt_paragraphs_are_documents_for_dedup_split_and_eot(tmp_path, gpt2_tokenizer_dir, tok):
    corpus = "Alpha para one.\nmore alpha.\n\nBeta para.\n\nAlpha para one.\nmore alpha.\n\n\nGamma.\n"
    (tmp_path / "corpus.txt").write_text(corpus, encoding="utf-8")
    code = main(
        [
            "prepare",
            "--input", str(tmp_path / "corpus.txt"),
            "--tokenizer", str(gpt2_tokenizer_dir),
            "--out", str(tmp_path / "o"),
            "--txt-documents", "paragraphs",
            "--val-fraction", "0",
            "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    meta = json.loads((tmp_path / "o" / "meta.json").read_text(encoding="utf-8"))
    assert meta["settings"]["txt_documents"] == "paragraphs"
    assert meta["sources"][0]["documents"] == 4 and meta["documents"]["dropped"]["duplicates"] == 1
    text = tok.decode(_read_split(tmp_path / "o", meta, "train").tolist())
    assert text == "Alpha para one.\nmore alpha.<|endoftext|>Beta para.<|endoftext|>Gamma.<|endoftext|>"


def test_gutenberg_strip_needs_whole_file_documents(tmp_path, gpt2_tokenizer_dir):
    (tmp_path / "a.txt").write_text("x\n\ny\n", encoding="utf-8")
    with pytest.raises(ScratchLLMError, match="strip_gutenberg needs each .txt file to be one document"):
        prepare(
            [tmp_path / "a.txt"],
            gpt2_tokenizer_dir,
            tmp_path / "o",
            strip_gutenberg=True,
            txt_documents="lines",
            progress=False,
        )
    assert not (tmp_path / "o").exists()


def test_the_folder_carries_its_tokenizer(tmp_path, shared_data, gpt2_tokenizer_dir, tok):
    """meta.json names ``tokenizer/`` inside the folder: a copy that encodes exactly like the original."""
    from scratchllm.tokenizer import load

    meta = prepare([shared_data / "rasbt" / "the-verdict.txt"], gpt2_tokenizer_dir, tmp_path / "o", progress=False)
    assert meta["tokenizer"]["path"] == "tokenizer" and meta["tokenizer"]["kind"] == "gpt2"
    copy = load(tmp_path / "o" / "tokenizer")
    text = (shared_data / "rasbt" / "the-verdict.txt").read_text(encoding="utf-8")
    assert copy.encode_ordinary(text) == tok.encode_ordinary(text) and copy.vocab_size == tok.vocab_size
    assert not list(tmp_path.glob(".o.*"))  # no temporary folder left beside it
