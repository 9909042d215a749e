"""The ``scratchllm`` command: one subcommand per pipeline stage.

Each subcommand is one typed function in :mod:`scratchllm.commands`; :mod:`scratchllm.signature_cli` turns its
signature into flags and its docstring into help, so the function *is* the documentation and the YAML schema.
Command modules import heavy libraries (torch) inside the functions, which keeps ``--help`` instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from scratchllm.errors import ScratchLLMError
from scratchllm.signature_cli import add_command


def command_table() -> dict[str, Any]:
    """Subcommand name -> function, or -> {sub-subcommand name -> function} for command groups."""
    from scratchllm.commands import data, demo, model, tokenizer, train

    return {
        "tokenizer": {"train": tokenizer.train, "encode": tokenizer.encode, "decode": tokenizer.decode},
        "prepare": data.prepare,
        "download": data.download,
        "pretrain": train.pretrain,
        "generate": model.generate,
        "demo": demo.demo,
    }


def build_parser() -> argparse.ArgumentParser:
    from scratchllm import __version__

    parser = argparse.ArgumentParser(
        prog="scratchllm",
        description="Build, train and run a GPT-style language model from scratch.",
    )
    parser.add_argument("--version", action="version", version=f"scratchllm {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for name, entry in command_table().items():
        if callable(entry):
            add_command(subparsers, name, entry)
            continue
        group = subparsers.add_parser(name, help=f"{name} commands: {', '.join(entry)}")
        group_sub = group.add_subparsers(title=f"{name} commands", metavar="COMMAND", required=True)
        for sub_name, func in entry.items():
            add_command(group_sub, sub_name, func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the chosen command, and turn user errors into one line on stderr."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args._command
    try:
        kwargs = command.kwargs_from(args)
        run: Callable[..., Any] = command.func
        run(**kwargs)
    except ScratchLLMError as exc:
        print(f"scratchllm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scratchllm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `scratchllm tokenizer encode ... | head`
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
