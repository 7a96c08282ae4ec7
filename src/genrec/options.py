"""Command-line options declared once, on the settings dataclasses themselves.

A field made with ``option(default, help, ...)`` becomes one command-line option: its name
(``max_history`` -> ``--max-history``), type, default and help come from the field, so a new
setting is one field, and ``genrec train`` and ``eval/run.py`` cannot drift from ``TrainConfig``
and ``EvalConfig``. Fields made otherwise are settings without an option.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import MISSING, Field, field, fields
from typing import Any

from .errors import DataError

__all__ = ["option", "add_options", "options_from_args"]

_KINDS = {"int": int, "float": float, "str": str}
_WHAT = {int: "whole numbers", float: "numbers", str: "names"}


def option(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    choices: Sequence[str] | None = None,
    zero_is_none: bool = False,
    group: str | None = None,
    metavar: str | None = None,
) -> Any:
    """A dataclass field that is also a command-line option. ``zero_is_none``: the option's 0
    means the setting's None (no limit); ``group``: options of one group exclude each other."""
    meta = {"help": help, "flag": flag, "choices": tuple(choices) if choices else None, "zero_is_none": zero_is_none,
            "group": group, "metavar": metavar}  # fmt: skip
    return field(default=default, metadata={"option": meta})


def _options(cls: type) -> list[tuple[Field, dict[str, Any]]]:
    return [(f, f.metadata["option"]) for f in fields(cls) if "option" in f.metadata]


def _flag(f: Field, meta: dict[str, Any]) -> str:
    return meta["flag"] or "--" + f.name.replace("_", "-")


def _kind(annotation: str) -> tuple[type | None, bool]:
    """(element type, is a comma-separated list) of an annotation such as ``int | None`` or
    ``tuple[float, ...]``; None for ``bool``."""
    text = str(annotation).replace(" ", "")
    listed = re.fullmatch(r"(?:tuple|list)\[(\w+)(?:,\.\.\.)?\]", text)
    if listed:
        return _KINDS[listed.group(1)], True
    base = text.replace("|None", "").replace("None|", "")
    return (None, False) if base == "bool" else (_KINDS[base], False)


def add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """One option per ``option`` field of ``cls``, in field order."""
    groups: dict[str, Any] = {}
    for f, meta in _options(cls):
        kind, listed = _kind(f.type)
        flag, dest = _flag(f, meta), f.name
        target = parser
        if meta["group"]:
            if meta["group"] not in groups:
                groups[meta["group"]] = parser.add_mutually_exclusive_group()
            target = groups[meta["group"]]
        if kind is None:  # a switch: --name turns on what is off by default, --no-name the reverse
            if f.default:
                target.add_argument(flag if meta["flag"] else "--no-" + f.name.replace("_", "-"), dest=dest,
                                    action="store_false", help=meta["help"])  # fmt: skip
            else:
                target.add_argument(flag, dest=dest, action="store_true", help=meta["help"])
            continue
        default = f.default
        if listed:  # parsed after argparse, so that a bad entry is named with the option (options_from_args)
            default, kind = ",".join(map(str, default)), str
        elif default is None and meta["zero_is_none"]:
            default = 0
        target.add_argument(flag, dest=dest, type=kind, default=default, choices=meta["choices"], metavar=meta["metavar"],
                            help=meta["help"])  # fmt: skip


def options_from_args(cls: type, args: argparse.Namespace, **settings: Any) -> Any:
    """``cls`` built from the parsed options, with ``settings`` (those without an option, or
    computed from others) on top. A comma-separated list with a bad entry is a DataError naming
    the option."""
    values: dict[str, Any] = {}
    for f, meta in _options(cls):
        value = getattr(args, f.name)
        kind, listed = _kind(f.type)
        if listed:
            value = _parse_list(value, kind, _flag(f, meta))
            value = list(value) if str(f.type).startswith("list") else value
        elif meta["zero_is_none"] and value == 0:
            value = None
        values[f.name] = value
    values.update(settings)
    missing = [f.name for f in fields(cls) if f.name not in values and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise DataError(f"{cls.__name__} needs {', '.join(missing)}")
    return cls(**values)


def _parse_list(text: str, kind: type, flag: str) -> tuple:
    try:
        return tuple(kind(part.strip()) for part in str(text).split(",") if part.strip())
    except ValueError:
        raise DataError(f"{flag} takes comma-separated {_WHAT[kind]}, got {text!r}") from None
