"""JSON text exactly as ``json.dumps(value, indent=2, default=str)`` writes it, faster.

The standard library encodes in C only without ``indent``; with it, every value goes
through its pure-Python generator, which took most of ``kvmrec status -o json``'s time on a
thousand objects. Here only the containers are walked in Python; strings and numbers are
encoded by the C functions the standard library uses itself, so the text is the same to
the byte.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii
from typing import Any

_scalar = json.JSONEncoder(default=str).encode


class _Fallback(Exception):
    """A value the fast walk does not write (a key that is not a string)."""


def dumps(value: Any) -> str:
    """``json.dumps(value, indent=2, default=str)``."""
    out: list[str] = []
    try:
        _write(value, "\n", out)
    except _Fallback:
        return json.dumps(value, indent=2, default=str)
    return "".join(out)


def _write(value: Any, newline: str, out: list[str]) -> None:
    if isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        inner = newline + "  "
        separator = "{" + inner
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Fallback
            out.append(separator)
            out.append(encode_basestring_ascii(key))
            out.append(": ")
            _item(item, inner, out)
            separator = "," + inner
        out.append(newline + "}")
    elif isinstance(value, list | tuple):
        if not value:
            out.append("[]")
            return
        inner = newline + "  "
        separator = "[" + inner
        for item in value:
            out.append(separator)
            _item(item, inner, out)
            separator = "," + inner
        out.append(newline + "]")
    else:
        _item(value, newline, out)


def _item(value: Any, newline: str, out: list[str]) -> None:
    # The common leaves without a call into the encoder (the text is the encoder's).
    kind = type(value)
    if kind is str:
        out.append(encode_basestring_ascii(value))
    elif kind is bool or value is None:
        out.append(_CONSTANTS[value])
    elif kind is int:
        out.append(int.__repr__(value))
    elif isinstance(value, dict | list | tuple):
        _write(value, newline, out)
    elif isinstance(value, str):
        out.append(encode_basestring_ascii(value))
    else:
        out.append(_scalar(value))


_CONSTANTS = {True: "true", False: "false", None: "null"}
