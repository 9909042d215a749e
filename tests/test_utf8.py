"""One UTF-8 decoder: every text reader reports a bad byte the same way."""

from __future__ import annotations

import pytest

from scratchllm.cli import main
from scratchllm.errors import ScratchLLMError
from scratchllm.utf8 import decode_utf8, read_utf8


def test_error_names_place_offset_byte_and_the_switch():
    with pytest.raises(ScratchLLMError) as err:
        decode_utf8("héllo".encode("latin-1"), "f.txt:3", base_offset=100, replace_flag="--errors")
    assert (
        str(err.value)
        == "f.txt:3: not UTF-8 text (byte offset 101: 0xe9); pass --errors replace to substitute U+FFFD"
    )
    with pytest.raises(ScratchLLMError, match=r"^stdin: not UTF-8 text \(byte offset 0: 0xff\)$"):
        decode_utf8(b"\xff", "stdin")
    assert decode_utf8(b"a\xffb", "x", "replace") == "a\ufffdb"


def test_read_utf8_names_missing_files_and_folders(tmp_path):
    with pytest.raises(ScratchLLMError, match="nope.txt: file not found"):
        read_utf8(tmp_path / "nope.txt")
    with pytest.raises(ScratchLLMError, match="is a folder, expected a text file"):
        read_utf8(tmp_path)
    (tmp_path / "ok.txt").write_text("中文", encoding="utf-8")
    assert read_utf8(tmp_path / "ok.txt") == "中文"


def test_a_yaml_config_with_a_bad_byte_is_one_line(tmp_path, capsys):
    (tmp_path / "c.yaml").write_bytes(b"max_new_tokens: 5\nprompt: caf\xe9\n")
    code = main(["generate", "--config", str(tmp_path / "c.yaml"), "--model", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "c.yaml: not UTF-8 text (byte offset 29: 0xe9)" in err[0]


def test_read_json_names_the_file_and_line(tmp_path):
    from scratchllm.utf8 import read_json

    (tmp_path / "meta.json").write_text('{\n "a": 1,\n "b": }\n', encoding="utf-8")
    with pytest.raises(ScratchLLMError, match=r"meta.json:3: invalid JSON \(Expecting value at column 7\)"):
        read_json(tmp_path / "meta.json")
    (tmp_path / "bad.json").write_bytes(b'{"a": "caf\xe9"}')
    with pytest.raises(ScratchLLMError, match=r"bad.json: not UTF-8 text \(byte offset 10: 0xe9\)"):
        read_json(tmp_path / "bad.json")
    (tmp_path / "ok.json").write_text('{"名": [1]}', encoding="utf-8")
    assert read_json(tmp_path / "ok.json") == {"名": [1]}


def test_jsonl_objects_keep_line_numbers_and_name_the_bad_line(tmp_path):
    from scratchllm.utf8 import read_jsonl_objects

    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n  \n{"b": 2}\n', encoding="utf-8")
    assert read_jsonl_objects(path) == [(1, {"a": 1}), (4, {"b": 2})]
    path.write_text('{"a": 1}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(ScratchLLMError, match=r"rows.jsonl:2: expected a JSON object per line, got list"):
        read_jsonl_objects(path)
    path.write_text('{"a": 1}\n{"b": \n', encoding="utf-8")
    with pytest.raises(ScratchLLMError, match=r"rows.jsonl:2: invalid JSON"):
        read_jsonl_objects(path)
