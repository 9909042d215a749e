"""``scratchllm download cmmlu|hellaswag`` from a local mirror (no internet): files, subfolders, hashes."""

from __future__ import annotations

import functools
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from scratchllm.data.download import REGISTRY, download
from scratchllm.errors import ScratchLLMError
from scratchllm.evaluate.tasks import read_task


@pytest.fixture
def mirror(tmp_path: Path, shared_data: Path):
    root = tmp_path / "mirror"
    shutil.copytree(shared_data / "cmmlu", root / "cmmlu")
    (root / "hellaswag").mkdir()
    (root / "hellaswag" / "hellaswag_val.jsonl").write_text(
        '{"ctx": "A cat", "endings": ["sits.", "flies."], "label": 0}\n', encoding="utf-8"
    )

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def test_cmmlu_downloads_into_test_and_dev(mirror, tmp_path: Path) -> None:
    url, _ = mirror
    assert len(REGISTRY["cmmlu"].files) == 134
    folder = download("cmmlu", cache_dir=tmp_path / "cache", mirror=url)
    assert len(list((folder / "test").glob("*.csv"))) == 67 == len(list((folder / "dev").glob("*.csv")))
    subjects = read_task("cmmlu", folder)
    assert len(subjects) == 67 and all(len(s.dev) == 5 for s in subjects)


def test_cmmlu_with_altered_file_is_refused(mirror, tmp_path: Path) -> None:
    url, root = mirror
    (root / "cmmlu" / "dev" / "agronomy.csv").write_text("Question,A,B,C,D,Answer\n", encoding="utf-8")
    with pytest.raises(ScratchLLMError, match=r"agronomy.csv: sha256 \w+ does not match"):
        download("cmmlu", cache_dir=tmp_path / "cache", mirror=url)
    assert not (tmp_path / "cache" / "cmmlu" / "dev" / "agronomy.csv").exists()


def test_hellaswag_is_announced_as_unverified(mirror, tmp_path: Path, capsys) -> None:
    url, _ = mirror
    path = download("hellaswag", cache_dir=tmp_path / "cache", mirror=url)
    assert "hellaswag_val.jsonl has no pinned sha256; it is not verified" in capsys.readouterr().err
    (subject,) = read_task("hellaswag", path)
    assert subject.questions[0].choices == ("sits.", "flies.")
