"""download(): files served by a local http.server (no internet): success, cache, checksum, 404, zip, CLI."""

from __future__ import annotations

import functools
import hashlib
import shutil
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scratchllm.cli import main
from scratchllm.data.download import REGISTRY, download
from scratchllm.errors import ScratchLLMError


@pytest.fixture()
def mirror(tmp_path, shared_data):
    """A local mirror laid out as <entry>/<file name of the URL>, with a log of requested paths."""
    root = tmp_path / "mirror"
    (root / "tiny-shakespeare").mkdir(parents=True)
    shutil.copy(shared_data / "tinyshakespeare" / "input.txt", root / "tiny-shakespeare" / "input.txt")
    (root / "the-verdict").mkdir()
    (root / "the-verdict" / "the-verdict.txt").write_text(
        "not the verdict\n", encoding="utf-8"
    )  # wrong bytes
    (root / "gpt2-tokenizer").mkdir()
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(shared_data / "gpt2-tokenizer" / name, root / "gpt2-tokenizer" / name)
    (root / "sms-spam-collection").mkdir()
    with zipfile.ZipFile(root / "sms-spam-collection" / "sms+spam+collection.zip", "w") as zf:
        zf.write(shared_data / "sms-spam-collection" / "SMSSpamCollection", "SMSSpamCollection")
        zf.write(shared_data / "sms-spam-collection" / "readme", "readme")
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server naming)
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()
    server.server_close()


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_then_cache_hit_then_force(tmp_path, mirror):
    url, requests = mirror
    cache = tmp_path / "cache"
    path = download("tiny-shakespeare", cache_dir=cache, mirror=url)
    assert path == cache / "tiny-shakespeare" / "input.txt"
    assert _sha(path) == REGISTRY["tiny-shakespeare"].files[0].sha256
    assert requests == ["/tiny-shakespeare/input.txt"]
    assert download("tiny-shakespeare", cache_dir=cache, mirror=url) == path
    assert len(requests) == 1  # served from the cache
    download("tiny-shakespeare", cache_dir=cache, mirror=url, force=True)
    assert len(requests) == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["input.txt"]  # no temp files left


def test_checksum_mismatch_discards_the_file(tmp_path, mirror):
    url, _ = mirror
    with pytest.raises(
        ScratchLLMError, match=r"the-verdict.txt: sha256 [0-9a-f]{64} does not match the expected b41e"
    ):
        download("the-verdict", cache_dir=tmp_path / "c", mirror=url)
    assert list((tmp_path / "c" / "the-verdict").iterdir()) == []


def test_http_404_message(tmp_path, mirror):
    url, _ = mirror
    with pytest.raises(ScratchLLMError, match=r"pride-and-prejudice/1342-0.txt: HTTP 404"):
        download("pride-and-prejudice", cache_dir=tmp_path / "c", mirror=url)
    assert list((tmp_path / "c" / "pride-and-prejudice").iterdir()) == []


def test_zip_member_extracted_and_checked(tmp_path, mirror, shared_data):
    url, _ = mirror
    path = download("sms-spam-collection", cache_dir=tmp_path / "c", mirror=url)
    assert path.read_bytes() == (shared_data / "sms-spam-collection" / "SMSSpamCollection").read_bytes()
    assert sorted(p.name for p in path.parent.iterdir()) == ["SMSSpamCollection"]  # the zip is gone


def test_tokenizer_folder_and_env_cache(tmp_path, mirror, monkeypatch):
    url, _ = mirror
    monkeypatch.setenv("SCRATCHLLM_CACHE", str(tmp_path / "envcache"))
    monkeypatch.setenv("SCRATCHLLM_MIRROR", url)
    folder = download("gpt2-tokenizer")
    assert folder == tmp_path / "envcache" / "gpt2-tokenizer"
    from scratchllm.tokenizer import load

    assert load(folder).encode("Hello world") == [15496, 995]


def test_unknown_name_and_cli(tmp_path, mirror, capsys):
    url, _ = mirror
    with pytest.raises(ScratchLLMError, match="unknown name 'nope'; expected one of tiny-shakespeare"):
        download("nope")
    assert main(["download", "--list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in REGISTRY)
    assert main(["download", "tiny-shakespeare", "--cache-dir", str(tmp_path / "c"), "--mirror", url]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "c" / "tiny-shakespeare" / "input.txt")
    assert main(["download", "the-verdict", "--cache-dir", str(tmp_path / "c"), "--mirror", url]) == 2
    assert "does not match" in capsys.readouterr().err


def _ceval_zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)


def test_ceval_archive_is_unpacked_into_a_folder_the_ceval_task_reads(tmp_path, mirror):
    from scratchllm.evaluate.tasks import read_task

    url, _ = mirror
    root = tmp_path / "mirror" / "ceval"
    root.mkdir()
    header = "id,question,A,B,C,D,answer"
    _ceval_zip(root / "ceval-exam.zip", {
        "dev/accountant_dev.csv": f"{header},explanation\n0,一加一,1,2,3,4,B,因为\n",
        "val/accountant_val.csv": f"{header}\n0,二加二,2,3,4,5,C\n1,三加三,6,7,8,9,A\n",
        "test/accountant_test.csv": f"{header}\n0,四加四,8,9,10,11,\n",
    })  # fmt: skip
    folder = download("ceval", cache_dir=tmp_path / "c", mirror=url)
    assert folder == tmp_path / "c" / "ceval" / "ceval-exam" and sorted(p.name for p in folder.iterdir()) == [
        "dev", "test", "val"
    ]  # fmt: skip
    assert sorted(p.name for p in folder.parent.iterdir()) == ["ceval-exam"]  # no archive or staging folder left
    (subject,) = read_task("ceval", folder)
    assert subject.name == "accountant" and len(subject.questions) == 2 and len(subject.dev) == 1
    assert download("ceval", cache_dir=tmp_path / "c", mirror=url) == folder  # cached: nothing fetched again


def test_an_archive_member_that_climbs_out_is_refused_and_nothing_is_written(tmp_path, mirror):
    url, _ = mirror
    root = tmp_path / "mirror" / "ceval"
    root.mkdir()
    _ceval_zip(root / "ceval-exam.zip", {"val/ok.csv": "id\n", "../../evil.txt": "x"})
    with pytest.raises(ScratchLLMError, match=r"member '\.\./\.\./evil\.txt' would be written outside"):
        download("ceval", cache_dir=tmp_path / "c", mirror=url)
    assert list((tmp_path / "c" / "ceval").iterdir()) == [] and not (tmp_path / "evil.txt").exists()
