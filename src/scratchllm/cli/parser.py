"""The ``scratchllm`` command line: typed functions become subcommands through jsonargparse.

Each subcommand is one function; its signature is both the command line and the schema of a ``--config`` YAML
file, and its Google-style docstring is the help (litgpt's CLI works the same way). A dataclass parameter
``train`` becomes a group of ``--train.lr``-style flags and a ``train:`` mapping in YAML. Precedence: the
function's default < ``--config FILE.yaml`` < a flag given after it. ``--print-config`` prints the complete
configuration of a run as YAML, which ``--config`` reads back.

Adding a command is one line in :data:`COMMANDS`: ``"serve": serve.serve``, or a nested mapping for a group
(``"tokenizer": {"train": ...}``), or :class:`Command` for one whose first parameter may be given bare.

jsonargparse spells flags as the parameters are spelled (``--max_new_tokens``), takes booleans as
``--flag true|false`` and lists as ``--input '[a, b]'`` or ``--input+ a``. :func:`normalize_argv` is the small
shim that also accepts this project's spellings from before, which the README uses: ``--max-new-tokens``,
``--flag`` / ``--no-flag``, ``--input a b c`` and a bare ``scratchllm download NAME``, and a group's fields
spelled flat (``--lora-rank 16`` for ``--lora.rank 16``).
"""

from __future__ import annotations

import inspect
import json
import os
import re
import sys
import types
import typing
from argparse import ArgumentError
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from scratchllm.cli import convert, data, evaluate, finetune, generate, serve, tokenizer
from scratchllm.errors import ScratchLLMError
from scratchllm.recipes import classify, demo, dpo, instruct, pretrain
from scratchllm.utf8 import read_utf8


@dataclass(frozen=True)
class Command:
    """A subcommand's function, and the parameter (if any) that may be given as a bare word."""

    func: Callable[..., Any]
    positional: str | None = None


#: subcommand -> function (or Command), or -> {sub-subcommand -> function} for a group of commands.
COMMANDS: dict[str, Any] = {
    "tokenizer": {"train": tokenizer.train, "encode": tokenizer.encode, "decode": tokenizer.decode},
    "prepare": data.prepare,
    "download": Command(data.download, positional="name"),
    "pretrain": pretrain.pretrain,
    "generate": generate.generate,
    "convert": convert.convert,
    "demo": demo.demo,
    "serve": serve.serve,
    "chat": serve.chat,
    "finetune": {
        "classify": classify.finetune_classify, "instruct": instruct.finetune_instruct, "dpo": dpo.finetune_dpo,
    },
    "classify": Command(finetune.classify, positional="texts"),
    "merge-lora": finetune.merge_lora,
    "evaluate": {"perplexity": evaluate.perplexity, "choice": evaluate.choice, "judge": evaluate.judge},
}


def _as_command(entry: Any) -> Command:
    return entry if isinstance(entry, Command) else Command(entry)


def _description(func: Callable[..., Any]) -> str:
    """The docstring up to its ``Args:`` section."""
    doc = inspect.cleandoc(func.__doc__ or "")
    return doc.split("\nArgs:", 1)[0].strip()


@dataclass
class CommandLine:
    """The root parser and, for each subcommand path (``("tokenizer", "train")``), its parser and command."""

    parser: Any
    leaves: dict[tuple[str, ...], tuple[Any, Command]]


def _command_path(argv: Sequence[str], table: dict[str, Any] = COMMANDS) -> tuple[str, ...]:
    """The subcommand words at the start of ``argv`` (``("tokenizer", "train")``), as far as they name commands."""
    path: tuple[str, ...] = ()
    level: Any = table
    for word in argv:
        if not isinstance(level, dict) or word not in level:
            break
        path, level = (*path, word), level[word]
    return path


def _build(only: tuple[str, ...] | None = None, table: dict[str, Any] = COMMANDS) -> CommandLine:
    """The parser; with ``only``, the other commands get a parser without options (their help line only).

    Reading a signature and its docstrings takes jsonargparse a good part of a second for all commands
    together, so a run (or ``--help``) builds just the command it names.
    """
    from docstring_parser import DocstringStyle
    from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

    from scratchllm import __version__

    set_parsing_settings(docstring_parse_style=DocstringStyle.GOOGLE)  # ours are Google style: skip guessing
    leaves: dict[tuple[str, ...], tuple[Any, Command]] = {}

    def add_all(parent: Any, entries: dict[str, Any], path: tuple[str, ...]) -> None:
        subcommands = parent.add_subcommands(required=True, dest="subcommand")
        for name, entry in entries.items():
            here = (*path, name)
            wanted = only is None or only[: len(here)] == here
            if isinstance(entry, dict):
                summary = f"{name} commands: {', '.join(entry)}"
                group = ArgumentParser(description=summary, exit_on_error=False)
                subcommands.add_subcommand(name, group, help=summary)  # jsonargparse: parent level first
                if wanted:
                    add_all(group, entry, here)
                continue
            command = _as_command(entry)
            description = _description(command.func)
            leaf = ArgumentParser(description=description, exit_on_error=False)
            if wanted:
                leaf.add_argument(
                    "--config",
                    action=ActionConfigFile,
                    help="YAML file of this command's options (see --print-config); flags after it override it",
                )
                leaf.add_function_arguments(command.func, as_positional=False)
                leaves[here] = (leaf, command)
            subcommands.add_subcommand(name, leaf, help=description.splitlines()[0] if description else "")

    parser = ArgumentParser(
        prog="scratchllm",
        description="Build, train and run a GPT-style language model from scratch.",
        exit_on_error=False,
    )
    parser.add_argument("--version", action="version", version=f"scratchllm {__version__}")
    add_all(parser, table, ())
    return CommandLine(parser, leaves)


def build_parser() -> Any:
    """The jsonargparse parser of every subcommand, all options included."""
    return _build().parser


# ------------------------------------------------------------------------------------- the spelling shim
def _kind(typehint: Any) -> str:
    """``bool``, ``list`` or ``value``: how the shim reads the words after a flag of this type."""
    if typing.get_origin(typehint) in (Union, types.UnionType):  # X | None reads like X
        inner = [a for a in typing.get_args(typehint) if a is not type(None)]
        typehint = inner[0] if len(inner) == 1 else typehint
    if typehint is bool:
        return "bool"
    if typing.get_origin(typehint) in (list, tuple, Sequence):
        return "list"
    return "value"


def _kinds(parser: Any) -> dict[str, str]:
    """Option string (``--train.max_steps``) -> kind, for every option of one subcommand's parser."""
    kinds = {}
    for action in parser._actions:
        hint = getattr(action, "_typehint", None)
        kind = _kind(hint) if hint is not None else ("flag" if action.nargs in (0, "?") else "value")
        for option in action.option_strings:
            kinds[option] = kind
    return kinds


_NUMBER = re.compile(r"-\.?\d")
_BOOL_WORDS = ("true", "false")


def normalize_argv(argv: Sequence[str], line: CommandLine | None = None) -> list[str]:
    """Rewrite this project's flag spellings into jsonargparse's (see the module docstring)."""
    path = _command_path(argv)
    line = line or _build(path)
    if path not in line.leaves:
        return list(argv)
    words = list(argv)
    out = words[: len(path)]
    i = len(path)
    leaf, command = line.leaves[path]
    kinds = _kinds(leaf)
    positional = command.positional
    bare: list[str] = []  # the bare words of a list-typed positional (`classify "text one" "text two"`)
    positional_is_list = positional is not None and kinds.get(f"--{positional}") == "list"
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--":
            out.extend(words[i:])
            break
        if not word.startswith("--"):
            if positional_is_list:
                bare.append(word)
            elif positional is not None:  # `download NAME`
                out.append(f"--{positional}={word}")
                positional = None
            else:
                out.append(word)
            continue
        name, eq, value = word.partition("=")
        name = "--" + name[2:].replace("-", "_")
        group, _, field = name.partition("_")
        if name not in kinds and f"{group}.{field}" in kinds:
            name = f"{group}.{field}"  # --lora-rank -> --lora.rank
        if name not in kinds and name.startswith("--no_") and kinds.get("--" + name[5:]) == "bool":
            out.append(f"--{name[5:]}=false")  # --no-cache
            continue
        kind = kinds.get(name, "value")
        if eq or kind == "flag" or name.endswith("+"):
            out.append(name + eq + value)
        elif kind == "bool":
            if i < len(words) and words[i].lower() in _BOOL_WORDS:
                out.append(f"{name}={words[i]}")
                i += 1
            else:
                out.append(f"{name}=true")  # --stream
        elif kind == "list":
            values = []
            while i < len(words) and (not words[i].startswith("-") or _NUMBER.match(words[i])):
                values.append(words[i])
                i += 1
            if len(values) == 1 and values[0].startswith("["):
                out.append(f"{name}={values[0]}")  # jsonargparse's own `--input '[a, b]'`
            elif values:
                out.append(f"{name}={json.dumps(values, ensure_ascii=False)}")
            else:
                out.append(name)
        else:
            out.append(name)
            if i < len(words):
                out.append(words[i])
                i += 1
    if bare:
        out.append(f"--{positional}={json.dumps(bare, ensure_ascii=False)}")
    return out


# ------------------------------------------------------------------------------------- parsing and errors
def load_yaml_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; errors name the file (and line, for syntax errors)."""
    import yaml

    if not path.is_file():
        raise ScratchLLMError(f"{path}: config file not found")
    try:
        loaded = yaml.safe_load(read_utf8(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ScratchLLMError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ScratchLLMError(f"{path}: expected a mapping of option names to values at the top level")
    return loaded


def _one_line(exc: BaseException) -> str:
    """jsonargparse's message on one line, ``<class 'int'>`` shown as ``int`` and ``Literal[...]`` as one of."""
    text = " ".join(str(exc).split())
    text = re.sub(r"Expected a (?:typing\.)?Literal\[(.*?)\]", r"Expected one of \1", text)
    return re.sub(r"<class '(?:[\w.]*\.)?(\w+)'>", r"\1", text)


def parse_command(argv: Sequence[str]) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The function ``argv`` names and its keyword arguments (defaults < ``--config`` < flags)."""
    line = _build(_command_path(argv))
    words = normalize_argv(argv, line)
    for n, word in enumerate(words):  # our own message for a config file that is missing or not YAML
        if word == "--config" and n + 1 < len(words):
            load_yaml_mapping(Path(words[n + 1]))
        elif word.startswith("--config="):
            load_yaml_mapping(Path(word.split("=", 1)[1]))
    try:
        config = line.parser.parse_args(words)
        values = line.parser.instantiate(config)
    except ArgumentError as exc:
        raise ScratchLLMError(_one_line(exc)) from None
    path: tuple[str, ...] = ()
    while "subcommand" in values:
        path = (*path, values["subcommand"])
        values = values[path[-1]]
    kwargs = {key: value for key, value in vars(values).items() if key not in ("config", "__path__")}
    return line.leaves[path][1].func, kwargs


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the chosen command, and turn user errors into one line on stderr (exit code 2).

    A command that returns something (``pretrain``'s summary) has it printed as JSON, by rank 0 only.
    """
    try:
        func, kwargs = parse_command(sys.argv[1:] if argv is None else argv)
        result = func(**kwargs)
    except ScratchLLMError as exc:
        print(f"scratchllm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scratchllm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `scratchllm tokenizer encode ... | head`
        return 0
    if result is not None and os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(json.dumps(result, indent=1, ensure_ascii=False, default=str))
    return 0
