"""Turn typed Python functions into a command line, and YAML files into their arguments.

One function is one subcommand: its signature is the schema of both the command line and of a ``--config`` YAML
file, and its Google-style docstring is the help text. Parameter ``max_new_tokens`` becomes ``--max-new-tokens``;
a dataclass parameter ``train`` becomes a group of ``--train.lr``-style flags and a ``train:`` mapping in YAML.
Precedence is: function default < YAML file < flag on the command line.

A parameter listed with :func:`positional` may also be given without its flag (``scratchllm download NAME``).

Supported annotations: ``int``, ``float``, ``str``, ``bool`` (``--flag`` / ``--no-flag``), ``pathlib.Path``,
``Literal[...]``, ``X | None``, ``list[X]`` (``--input a b c``) and dataclasses whose fields use those types.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Union

from scratchllm.errors import ScratchLLMError
from scratchllm.utf8 import read_utf8

_MISSING = object()


# --------------------------------------------------------------------------------------------- types
def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (tp, False)."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` (from YAML or a command-line string) to ``tp`` or raise an error naming ``where``."""
    inner, optional = _unwrap_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ScratchLLMError(f"{where}: a value is required, got null")
    tp = inner
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        for choice in choices:
            if value == choice or str(value) == str(choice):
                return choice
        raise ScratchLLMError(f"{where}: expected one of {', '.join(map(str, choices))}, got {value!r}")
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(tp) or (str,)
        items = value if isinstance(value, (list, tuple)) else [value]
        return [coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(items)]
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ScratchLLMError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return build_dataclass(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ScratchLLMError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ScratchLLMError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value).replace("_", ""))
        except ValueError:
            raise ScratchLLMError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ScratchLLMError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ScratchLLMError(f"{where}: expected a number, got {value!r}") from None
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ScratchLLMError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ScratchLLMError(f"{where}: expected text, got {value!r}")
        return str(value)
    return value


def build_dataclass(cls: type, data: dict[str, Any], where: str) -> Any:
    """Instantiate ``cls`` from a mapping, naming unknown keys and badly typed values."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    values = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ScratchLLMError(
                f"{where}: unknown field {key!r}; expected some of {', '.join(sorted(known))}"
            )
        values[name] = coerce(value, hints[name], f"{where}.{name}")
    try:
        return cls(**values)
    except TypeError as exc:
        raise ScratchLLMError(f"{where}: {exc}") from None


def positional(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: let ``names`` be given as bare positional words as well as ``--flags``."""

    def mark(func: Callable[..., Any]) -> Callable[..., Any]:
        func.__positional__ = names  # type: ignore[attr-defined]
        return func

    return mark


# --------------------------------------------------------------------------------------------- docstrings
def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into (description, {argument: help})."""
    if not doc:
        return "", {}
    doc = inspect.cleandoc(doc)
    lines = doc.splitlines()
    description: list[str] = []
    params: dict[str, str] = {}
    section = None
    current = None
    for line in lines:
        stripped = line.strip()
        if re.fullmatch(r"(Args|Arguments|Attributes|Parameters):", stripped):
            section = "args"
            continue
        if re.fullmatch(r"(Returns|Raises|Yields|Example|Examples|Note|Notes):", stripped):
            section = "other"
            continue
        if section == "args":
            match = re.match(r"^\s{2,}(\w+)(?:\s*\(.*?\))?:\s*(.*)$", line)
            if match and (line.startswith("    ") and not line.startswith("        ")):
                current = match.group(1)
                params[current] = match.group(2)
            elif current and stripped:
                params[current] += " " + stripped
        elif section is None:
            description.append(line)
    return "\n".join(description).strip(), params


# --------------------------------------------------------------------------------------------- parsers
@dataclasses.dataclass
class _Option:
    dest: str  # "train.lr" or "max_new_tokens"
    tp: Any


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _add_option(group: Any, dest: str, tp: Any, default: Any, help_text: str) -> _Option:
    inner, optional = _unwrap_optional(tp)
    origin = typing.get_origin(inner)
    kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS}
    shown_default = "" if default is _MISSING else f" (default: {default})"
    if default is _MISSING:
        help_text = (help_text + " (required)").strip()
    else:
        help_text = (help_text + shown_default).strip()
    if inner is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif origin in (list, tuple):
        kwargs["nargs"] = "+"
        kwargs["metavar"] = dest.split(".")[-1].upper()
    elif origin is Literal:
        kwargs["choices"] = [str(c) for c in typing.get_args(inner)]
    else:
        kwargs["metavar"] = {int: "N", float: "X", Path: "PATH"}.get(inner, "TEXT")
    group.add_argument(_flag(dest), help=help_text, **kwargs)
    return _Option(dest, tp)


@dataclasses.dataclass
class Command:
    """A function bound to the parser that was built from its signature."""

    func: Callable[..., Any]
    name: str
    options: list[_Option]

    def kwargs_from(self, namespace: argparse.Namespace) -> dict[str, Any]:
        """Merge defaults, the optional ``--config`` YAML and explicit flags into call arguments."""
        signature = inspect.signature(self.func)
        hints = typing.get_type_hints(self.func)
        explicit = {k: v for k, v in vars(namespace).items() if not k.startswith("_")}
        yaml_values: dict[str, Any] = {}
        config_path = explicit.pop("config", None)
        if config_path is not None:
            yaml_values = load_yaml_mapping(Path(config_path))
        source = str(config_path) if config_path else "command line"
        kwargs: dict[str, Any] = {}
        for name, param in signature.parameters.items():
            tp = hints.get(name, str)
            inner, _ = _unwrap_optional(tp)
            from_yaml = yaml_values.pop(name, yaml_values.pop(name.replace("_", "-"), _MISSING))
            if dataclasses.is_dataclass(inner):
                base = param.default if param.default is not inspect.Parameter.empty else None
                merged = dataclasses.asdict(base) if base is not None else {}
                if from_yaml is not _MISSING:
                    if not isinstance(from_yaml, dict):
                        raise ScratchLLMError(f"{source}: {name} must be a mapping, got {from_yaml!r}")
                    merged.update({k.replace("-", "_"): v for k, v in from_yaml.items()})
                prefix = name + "."
                for key, value in list(explicit.items()):
                    if key.startswith(prefix):
                        merged[key[len(prefix) :]] = value
                        del explicit[key]
                kwargs[name] = build_dataclass(inner, merged, f"{source}: {name}")
                continue
            if name in explicit:
                kwargs[name] = coerce(explicit.pop(name), tp, f"{_flag(name)}")
            elif from_yaml is not _MISSING:
                kwargs[name] = coerce(from_yaml, tp, f"{source}: {name}")
            elif param.default is inspect.Parameter.empty:
                raise ScratchLLMError(f"{self.name}: {_flag(name)} is required")
        if yaml_values:
            known = ", ".join(signature.parameters)
            raise ScratchLLMError(
                f"{source}: unknown key(s) {', '.join(sorted(yaml_values))} for '{self.name}'; expected some of {known}"
            )
        return kwargs


def load_yaml_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; errors name the file (and line, for syntax errors)."""
    import yaml

    if not path.is_file():
        raise ScratchLLMError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(read_utf8(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ScratchLLMError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ScratchLLMError(f"{path}: expected a mapping of option names to values at the top level")
    return data


def add_command(subparsers: Any, name: str, func: Callable[..., Any]) -> Command:
    """Add one subcommand whose flags mirror ``func``'s signature."""
    description, arg_help = parse_docstring(func.__doc__)
    summary = description.splitlines()[0] if description else ""
    parser = subparsers.add_parser(
        name, help=summary, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config",
        dest="config",
        default=argparse.SUPPRESS,
        metavar="FILE.yaml",
        help="YAML file whose keys are this command's options (flags given here override it)",
    )
    hints = typing.get_type_hints(func)
    options: list[_Option] = []
    for pname, param in inspect.signature(func).parameters.items():
        tp = hints.get(pname, str)
        inner, _ = _unwrap_optional(tp)
        default = _MISSING if param.default is inspect.Parameter.empty else param.default
        if dataclasses.is_dataclass(inner):
            group = parser.add_argument_group(f"{pname} ({inner.__name__})", arg_help.get(pname, ""))
            _, field_help = parse_docstring(inner.__doc__)
            field_hints = typing.get_type_hints(inner)
            base = default if default is not _MISSING and default is not None else None
            for f in dataclasses.fields(inner):
                if not f.init:
                    continue
                if base is not None:
                    fdefault = getattr(base, f.name)
                elif f.default is not dataclasses.MISSING:
                    fdefault = f.default
                elif f.default_factory is not dataclasses.MISSING:
                    fdefault = f.default_factory()
                else:
                    fdefault = _MISSING
                options.append(
                    _add_option(
                        group, f"{pname}.{f.name}", field_hints[f.name], fdefault, field_help.get(f.name, "")
                    )
                )
        else:
            options.append(_add_option(parser, pname, tp, default, arg_help.get(pname, "")))
            if pname in getattr(func, "__positional__", ()):
                parser.add_argument(
                    pname,
                    nargs="?",
                    default=argparse.SUPPRESS,
                    metavar=pname.upper(),
                    help=f"same as {_flag(pname)}",
                )
    command = Command(func, name, options)
    parser.set_defaults(_command=command)
    return command
