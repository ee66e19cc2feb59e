"""The keys of the configuration file, and the values each of them takes.

Every field of :class:`~kvmrec.settings.Settings` of a type YAML can spell (paths, URIs,
numbers, booleans, lists of paths, a host's labels as a mapping) is a key, under the
field's name, and so are the process's ``log_level`` and ``log_format``. A value is
checked against the field's type and range; a relative path is taken from a base directory
(the file's own). ``kvmrec.config`` reads the file and names the file, line and key of a
:class:`BadValue`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from kvmrec.settings import Settings

__all__ = ["BadValue", "LogFormat", "LogLevel", "check", "check_range", "known_keys", "unknown"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["text", "json"]

# Keys that configure the process rather than the service; they are global flags too
# (``kvmrec --log-level DEBUG run``).
_PROCESS_KEYS: dict[str, Any] = {"log_level": LogLevel, "log_format": LogFormat}

# Counts and durations that zero would break (a resync every 0 s, no worker, modulo zero);
# every other number only has to be finite and not negative.
_POSITIVE = frozenset(
    {
        "resync",
        "rescan",
        "workers",
        "full_resync_every",
        "stuck_after",
        "overcommit_memory",
        "overcommit_cpu",
    }
)

# -- which keys there are ------------------------------------------------------------------


# Scalar types the file can spell: how one value, and a list of them, are said.
_SCALARS: dict[Any, tuple[str, str]] = {
    bool: ("true or false", "booleans"),
    int: ("a whole number", "whole numbers"),
    float: ("a number", "numbers"),
    str: ("a string", "strings"),
    Path: ("a path", "paths"),
}


def _describe(hint: Any) -> str | None:
    """What a value of type ``hint`` looks like in words; None if the file cannot spell it."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        inner = _describe(rest[0]) if len(rest) == 1 else None
        return f"{inner} or null" if inner and len(rest) < len(args) else inner
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin is Mapping and args == (str, str):
        return "a mapping of label keys to values (zone: a)"
    if origin in (tuple, list, frozenset):
        homogeneous = len(args) == 1 or (len(args) == 2 and args[1] is Ellipsis)
        return f"a list of {_SCALARS[args[0]][1]}" if homogeneous and args[0] in _SCALARS else None
    return _SCALARS[hint][0] if hint in _SCALARS else None


@functools.cache
def known_keys() -> Mapping[str, Any]:
    """Every key the file may set, with its type: the Settings fields YAML can spell, and
    the process's ``log_level`` and ``log_format``."""
    hints = typing.get_type_hints(Settings)
    found = {
        f.name: hints[f.name]
        for f in dataclasses.fields(Settings)
        if _describe(hints[f.name]) is not None
    }
    return types.MappingProxyType({**found, **_PROCESS_KEYS})


# -- checking a value ----------------------------------------------------------------------


class BadValue(Exception):
    """One value is wrong; the caller adds the file, the line and the key."""


def check(value: Any, hint: Any, base: Path) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return check(value, inner, base)
    if origin is Literal:
        if value in args:
            return value
    elif origin in (tuple, list, frozenset):
        if isinstance(value, list):
            items = []
            for index, item in enumerate(value):
                try:
                    items.append(check(item, args[0], base))
                except BadValue as exc:
                    raise BadValue(f"item {index + 1}: {exc}") from None
            return origin(items)
    elif origin is Mapping:
        if isinstance(value, dict):
            return _labels(value)
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise BadValue(f"expected a finite number, got {value!r}")
            return float(value)
    elif hint is str:
        if isinstance(value, str) and value:
            return value
    elif hint is Path and isinstance(value, str) and value:
        return base / Path(value).expanduser()  # an absolute path replaces the base
    raise BadValue(f"expected {_describe(hint)}, got {_show(value)}")


def _labels(value: Mapping[Any, Any]) -> Mapping[str, str]:
    """A host's labels (``run --label``'s), each key and value spelt as a label's must be.
    A value YAML reads as another type (``ssd: true``) is refused, not turned into text:
    quoted, it says what the operator means."""
    from kvmrec.api import selectors  # only for a file that sets labels

    labels: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise BadValue(f"{key!r}: a label key is a string, got {_show(key)}")
        if not isinstance(item, str):
            raise BadValue(f"{key}: a label value is a string, got {_show(item)} (quote it)")
        try:
            name, text = selectors.label(f"{key}={item}")
        except ValueError as exc:
            raise BadValue(str(exc).removeprefix("selector ")) from None
        labels[name] = text
    return types.MappingProxyType(labels)


def _show(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value == "":
        return "an empty string"
    return repr(value)


def check_range(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if key in _POSITIVE and value <= 0:
        raise BadValue(f"must be greater than 0, got {value!r}")
    if value < 0:
        raise BadValue(f"must not be negative, got {value!r}")


def unknown(key: str) -> str:
    import difflib  # only for a misspelt key

    known = sorted(known_keys())
    guess = difflib.get_close_matches(key.replace("-", "_").lower(), known, n=1, cutoff=0.8)
    hint = f"did you mean {guess[0]!r}?" if guess else "known keys: " + ", ".join(known)
    return f"unknown key {key!r} ({hint})"
