"""Atomic writes: a file or folder is the old version or the new one, and a failure leaves no temporary."""

from __future__ import annotations

import json

import pytest

from scratchllm.atomic import atomic_file, atomic_folder, write_json_atomic, write_text_atomic


def test_files_are_replaced_whole_and_a_failed_write_keeps_the_old_one(tmp_path):
    path = tmp_path / "sub" / "run.json"
    write_json_atomic(path, {"lr": 1e-3, "name": "中文"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"lr": 1e-3, "name": "中文"}
    assert "中文" in path.read_text(encoding="utf-8")  # readable, not \u-escaped
    write_text_atomic(path, "new\n")
    assert path.read_text() == "new\n"
    with pytest.raises(RuntimeError), atomic_file(path) as tmp:
        tmp.write_text("half of a new ver")
        raise RuntimeError("crash mid-write")
    assert path.read_text() == "new\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.json"]


def test_a_folder_is_replaced_only_when_the_new_one_is_complete(tmp_path):
    folder = tmp_path / "data"
    with atomic_folder(folder) as tmp:
        (tmp / "meta.json").write_text("1")
        (tmp / "shard.bin").write_bytes(b"x")
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "shard.bin"]
    with pytest.raises(KeyboardInterrupt), atomic_folder(folder) as tmp:
        (tmp / "meta.json").write_text("2")
        raise KeyboardInterrupt
    assert (folder / "meta.json").read_text() == "1" and (folder / "shard.bin").exists()
    with atomic_folder(folder) as tmp:
        (tmp / "meta.json").write_text("3")
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json"]  # replaced, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temporary or old copy left
