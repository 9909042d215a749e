"""The ``scratchllm`` entry point."""

from __future__ import annotations

import subprocess
import sys

from scratchllm.cli import build_parser, command_table


def test_help_lists_every_subcommand():
    result = subprocess.run(
        [sys.executable, "-m", "scratchllm", "--help"], capture_output=True, text=True, check=True
    )
    for name in command_table():
        assert name in result.stdout


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    for name, entry in command_table().items():
        paths = [[name]] if callable(entry) else [[name, sub] for sub in entry]
        for path in paths:
            try:
                parser.parse_args([*path, "--help"])
            except SystemExit as exc:
                assert exc.code == 0
            out = capsys.readouterr().out
            assert "usage: scratchllm " + " ".join(path) in out
