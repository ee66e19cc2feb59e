"""``kvmrec explain KIND``: the fields of a kind, from its CRD schema."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kvmrec.api import schema


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "explain", help="describe the fields of a kind"
    )
    parser.add_argument("kind", help="e.g. Domain")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    kinds = schema.registry()
    match = {k.lower(): k for k in kinds}.get(args.kind.lower()) or next(
        (k for k, v in kinds.items() if v.plural == args.kind.lower()), None
    )
    if match is None:
        print(
            f"kvmrec explain: unknown kind {args.kind!r} (known: {', '.join(kinds)})",
            file=sys.stderr,
        )
        return 1
    kind = kinds[match]
    print(f"KIND: {kind.kind}\nVERSION: {schema.API_VERSION}\n")
    for field in schema.fields(kind):
        if field.path in ("apiVersion", "kind"):
            continue
        line = f"{field.path} <{field.type}>"
        if field.required:
            line += " required"
        if field.enum:
            line += " one of: " + ", ".join(str(v) for v in field.enum)
        if field.default not in (None, [], {}):
            line += f" (default {field.default})"
        print(line)
        if field.description:
            print(f"    {field.description}")
    return 0
