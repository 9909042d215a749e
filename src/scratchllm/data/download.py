"""A small registry of public files people start with, downloaded once into a cache and checked by sha256.

Every download goes to a temporary file next to its final place, is hashed while it streams in, and is renamed
into the cache only when the hash matches, so the cache never holds a partial or altered file. URLs point at
pinned commits where possible, so the content (and hence the hash) cannot drift.

``mirror`` (or ``$SCRATCHLLM_MIRROR``) replaces every URL with ``<mirror>/<entry>/<file name>``: an offline copy
of the registry, or a local test server.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from scratchllm.errors import ScratchLLMError


@dataclass(frozen=True)
class RemoteFile:
    """One file of an entry. ``sha256`` is the downloaded file's hash; ``None`` means upstream gives no stable
    hash (we then check ``extracted_sha256``, the hash of the member taken out of the archive)."""

    filename: str
    url: str
    sha256: str | None
    extract: str | None = None  # zip member to keep (the archive itself is deleted)
    extracted_sha256: str | None = None


@dataclass(frozen=True)
class Entry:
    name: str
    description: str
    license: str
    files: tuple[RemoteFile, ...]


_RASBT = "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/28c65cdfbc3338e2e040016eea4b7fdf556e4d57"
_GPT2 = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main"

REGISTRY: dict[str, Entry] = {
    entry.name: entry
    for entry in (
        Entry(
            "tiny-shakespeare",
            "40k lines of Shakespeare (1.1 MB), the char-rnn / nanoGPT classic",
            "public domain text (repo: MIT)",
            (
                RemoteFile(
                    "input.txt",
                    "https://raw.githubusercontent.com/karpathy/char-rnn/6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/"
                    "data/tinyshakespeare/input.txt",
                    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                ),
            ),
        ),
        Entry(
            "pride-and-prejudice",
            "Jane Austen, Pride and Prejudice (Project Gutenberg #1342, 0.7 MB)",
            "public domain in the USA",
            (
                RemoteFile(
                    "1342-0.txt",
                    "https://raw.githubusercontent.com/gutenbergbooks/1342/041e520899f9a02af517d6cb253bc1fdfbf923e2/"
                    "1342-0.txt",
                    "86dab871eec9c0cef97f4cb6313f86c6cc48f6f7809534e65cd3f1c1d486d247",
                ),
            ),
        ),
        Entry(
            "the-verdict",
            "Edith Wharton, The Verdict (20 kB short story used in 'Build a LLM from scratch')",
            "public domain",
            (
                RemoteFile(
                    "the-verdict.txt",
                    f"{_RASBT}/ch02/01_main-chapter-code/the-verdict.txt",
                    "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f",
                ),
            ),
        ),
        Entry(
            "sms-spam-collection",
            "UCI SMS Spam Collection: 5,574 labelled SMS (TSV label<TAB>text); zip hash unknown, member checked",
            "CC BY 4.0",
            (
                RemoteFile(
                    "SMSSpamCollection",
                    "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",
                    None,
                    extract="SMSSpamCollection",
                    extracted_sha256="7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d",
                ),
            ),
        ),
        Entry(
            "gpt2-tokenizer",
            "OpenAI GPT-2 BPE files (encoder.json + vocab.bpe): a folder `--tokenizer` accepts",
            "modified MIT (OpenAI)",
            (
                RemoteFile(
                    "encoder.json",
                    f"{_GPT2}/encoder.json",
                    "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
                ),
                RemoteFile(
                    "vocab.bpe",
                    f"{_GPT2}/vocab.bpe",
                    "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
                ),
            ),
        ),
    )
}


def default_cache_dir() -> Path:
    """``$SCRATCHLLM_CACHE`` or ``~/.cache/scratchllm``."""
    return Path(os.environ.get("SCRATCHLLM_CACHE") or Path.home() / ".cache" / "scratchllm")


def registry_table() -> str:
    """The registry as an aligned text table."""
    width = max(len(name) for name in REGISTRY)
    lines = [f"{'name'.ljust(width)}  description (licence)"]
    for entry in REGISTRY.values():
        lines.append(f"{entry.name.ljust(width)}  {entry.description} ({entry.license})")
    return "\n".join(lines)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, folder: Path, timeout: float) -> tuple[Path, str]:
    """Stream ``url`` into a temporary file in ``folder``; return (temp path, sha256)."""
    fd, name = tempfile.mkstemp(prefix=".download-", dir=folder)
    tmp = Path(name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while block := response.read(1 << 20):
                digest.update(block)
                out.write(block)
    except urllib.error.HTTPError as exc:
        tmp.unlink(missing_ok=True)
        raise ScratchLLMError(
            f"{url}: HTTP {exc.code} {exc.reason}; the file could not be downloaded"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise ScratchLLMError(
            f"{url}: download failed ({reason}); check the network or use --mirror"
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, digest.hexdigest()


def _expected(file: RemoteFile) -> str | None:
    return file.extracted_sha256 if file.extract else file.sha256


def download(
    name: str,
    cache_dir: str | Path | None = None,
    force: bool = False,
    mirror: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download registry entry ``name`` (unless cached) and return its path.

    Single-file entries return the file, multi-file entries (``gpt2-tokenizer``) their folder.

    Args:
        name: registry entry (see ``scratchllm download --list``).
        cache_dir: cache folder (default: $SCRATCHLLM_CACHE or ~/.cache/scratchllm).
        force: download again even when the file is cached.
        mirror: base URL that replaces each entry's host (e.g. a local mirror); also $SCRATCHLLM_MIRROR.
        timeout: seconds to wait for the server before giving up.
    """
    if name not in REGISTRY:
        raise ScratchLLMError(f"download: unknown name {name!r}; expected one of {', '.join(REGISTRY)}")
    entry = REGISTRY[name]
    mirror = mirror if mirror is not None else os.environ.get("SCRATCHLLM_MIRROR")
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = folder / name
    folder.mkdir(parents=True, exist_ok=True)
    for file in entry.files:
        target = folder / file.filename
        expected = _expected(file)
        if target.is_file() and not force and (expected is None or sha256_of(target) == expected):
            continue
        url = f"{mirror.rstrip('/')}/{name}/{file.url.rsplit('/', 1)[-1]}" if mirror else file.url
        print(f"scratchllm: downloading {url}", file=sys.stderr)
        tmp, digest = _fetch(url, folder, timeout)
        try:
            if file.sha256 is not None and digest != file.sha256:
                raise ScratchLLMError(
                    f"{url}: sha256 {digest} does not match the expected {file.sha256}; the file was discarded"
                )
            if file.extract:
                tmp = _extract(tmp, file.extract, url)
                if file.extracted_sha256 is not None and sha256_of(tmp) != file.extracted_sha256:
                    raise ScratchLLMError(
                        f"{url}: member {file.extract} has sha256 {sha256_of(tmp)}, expected "
                        f"{file.extracted_sha256}; the file was discarded"
                    )
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return folder / entry.files[0].filename if len(entry.files) == 1 else folder


def _extract(archive: Path, member: str, url: str) -> Path:
    """Take ``member`` out of the zip ``archive`` into a temporary file; delete the archive."""
    out = archive.with_name(archive.name + ".member")
    try:
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src, out.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    except KeyError:
        out.unlink(missing_ok=True)
        raise ScratchLLMError(f"{url}: the archive has no member {member!r}") from None
    except zipfile.BadZipFile:
        out.unlink(missing_ok=True)
        raise ScratchLLMError(f"{url}: not a zip archive") from None
    finally:
        archive.unlink(missing_ok=True)
    return out
