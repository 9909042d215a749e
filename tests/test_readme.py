"""Every ``scratchllm`` command the README shows (English and Chinese) runs as written, so the docs cannot drift.

Commands are collected from fenced code blocks and inline code spans; ``bash scripts/demo.sh ARGS`` counts as
``scratchllm demo ARGS``. Each is parsed against the real parser in a folder that holds ``configs/``; the cheap
ones (tokenizer and data preparation) also run there, on small files this test writes under the names the
README uses.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from scratchllm.cli import COMMANDS, main, parse_command

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDERS = {"COMMAND": "pretrain"}  # `scratchllm COMMAND --help`
RUNS = ("tokenizer", "prepare")  # cheap enough to run for real


def _segments(text: str) -> list[str]:
    """Shell pipeline pieces of one command line (``echo x | scratchllm ...`` -> two pieces)."""
    return [piece.strip() for piece in re.split(r"\|\||&&|;|(?<!\\)\|", text.replace("\\|", "|")) if piece.strip()]


def _argv(piece: str) -> list[str] | None:
    """The words after ``scratchllm`` (or ``scripts/demo.sh``), without redirections; None if not our command."""
    words = shlex.split(piece, comments=True)
    for n, word in enumerate(words):
        if word.endswith("scripts/demo.sh"):
            rest = ["demo", *words[n + 1 :]]
            break
        if word == "scratchllm" or word.endswith("/scratchllm"):
            rest = words[n + 1 :]
            break
    else:
        return None
    argv: list[str] = []
    skip = False
    for word in rest:
        if skip:
            skip = False
        elif word in (">", ">>", "2>"):
            skip = True
        else:
            argv.append(PLACEHOLDERS.get(word, word))
    return argv


def readme_commands() -> list[tuple[list[str], str | None]]:
    """``(argv, stdin)`` for each command in README.md, in order; stdin is what an ``echo`` pipes in."""
    text = (ROOT / "README.md").read_text(encoding="utf-8").replace("\\\n", " ")
    lines: list[str] = []
    for n, part in enumerate(re.split(r"^```.*$", text, flags=re.MULTILINE)):
        if n % 2:  # inside a fenced block: one command per line
            lines.extend(part.splitlines())
        else:  # prose: inline code spans, which may wrap across lines
            lines.extend(re.findall(r"`([^`]+)`", part.replace("\n", " ")))
    found = []
    for line in lines:
        pieces = _segments(line)
        for n, piece in enumerate(pieces):
            argv = _argv(piece)
            if argv is None:
                continue
            stdin = None
            if n > 0 and pieces[n - 1].startswith("echo "):
                stdin = shlex.split(pieces[n - 1])[1] + "\n"
            found.append((argv, stdin))
    return found


def _is_mention(argv: list[str]) -> bool:
    """``scratchllm prepare`` in prose names a command; it is not a command line."""
    level = COMMANDS
    for word in argv:
        if not isinstance(level, dict) or word not in level:
            return False
        level = level[word]
    return True


def test_readme_shows_the_commands_we_expect():
    commands = [argv for argv, _ in readme_commands()]
    firsts = {argv[0] for argv in commands if argv}
    assert {"tokenizer", "prepare", "download", "pretrain", "generate", "demo"} <= firsts
    assert ["pretrain", "--config", "configs/tiny-cpu.yaml", "--data.dirs", "data/"] in commands


@pytest.fixture
def readme_folder(tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder holding what the README's commands name: configs/, books/, tok/, 中文语料/."""
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    (tmp_path / "books").mkdir()
    english = (shared_data / "rasbt" / "the-verdict.txt").read_text(encoding="utf-8")
    (tmp_path / "books" / "verdict.txt").write_text(english, encoding="utf-8")
    shutil.copytree(shared_data / "gpt2-tokenizer", tmp_path / "tok")
    (tmp_path / "中文语料").mkdir()
    chinese = (shared_data / "gutenberg-zh" / "23863-0.txt").read_text(encoding="utf-8")[:8_000]
    (tmp_path / "中文语料" / "书.txt").write_text(chinese, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_readme_command_parses_and_the_cheap_ones_run(readme_folder, capsys, monkeypatch):
    import io
    import sys

    checked = ran = 0
    for argv, stdin in readme_commands():
        if _is_mention(argv):
            continue
        where = "scratchllm " + " ".join(argv)
        if "--help" in argv or "--print-config" in argv:
            with pytest.raises(SystemExit) as exit_info:
                main(argv)
            assert exit_info.value.code == 0, where
            if "--print-config" in argv:  # the README saves it as run.yaml and replays it
                (readme_folder / "run.yaml").write_text(capsys.readouterr().out, encoding="utf-8")
        elif argv[0] in RUNS and "FILES..." not in argv:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((stdin or "").encode()), encoding="utf-8"))
            assert main(argv) == 0, (where, capsys.readouterr().err)
            ran += 1
        else:
            parse_command(argv)  # raises ScratchLLMError naming the problem
        checked += 1
        capsys.readouterr()
    assert checked >= 12 and ran >= 4, (checked, ran)
    assert (readme_folder / "data-zh" / "meta.json").is_file() and (readme_folder / "data" / "meta.json").is_file()
