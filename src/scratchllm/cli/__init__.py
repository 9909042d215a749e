"""The ``scratchllm`` command: :mod:`~scratchllm.cli.parser` (jsonargparse) and one module of commands per stage.

Command modules import heavy libraries (torch) inside the functions, so ``scratchllm --help`` stays fast.
"""

from scratchllm.cli.parser import COMMANDS, Command, build_parser, main, parse_command

__all__ = ["COMMANDS", "Command", "build_parser", "main", "parse_command"]
