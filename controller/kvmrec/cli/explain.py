"""``kvmrec explain KIND[.FIELD...]``: the fields of a kind, from its CRD schema.

As kubectl explain: ``Domain`` lists every field; ``Domain.spec.disks`` (``spec.`` may be
left out, the items of arrays are walked into) shows one field and the fields under it. Kind
names are taken in any case, singular or plural.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kvmrec.api import schema


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "explain", help="describe a kind or one of its fields"
    )
    parser.add_argument("kind", metavar="KIND[.FIELD...]", help="e.g. Domain or Domain.spec.disks")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    name, _, path = str(args.kind).partition(".")
    kind = schema.find_kind(name)
    if kind is None:
        known = ", ".join(schema.registry())
        print(f"kvmrec explain: unknown kind {name!r} (known: {known})", file=sys.stderr)
        return 1
    fields = [f for f in schema.fields(kind) if f.path not in ("apiVersion", "kind")]
    try:
        target = schema.field_path(kind, path) if path else None
    except ValueError as exc:
        print(f"kvmrec explain: {exc}", file=sys.stderr)
        return 1
    print(f"KIND: {kind.kind}\nVERSION: {schema.API_VERSION}\n")
    if target is not None:
        field = next(f for f in fields if f.path == target)
        print("FIELD:")
        _print(field)
        below = [f for f in fields if f.path.startswith((f"{target}.", f"{target}[]."))]
        if below:
            print("\nFIELDS:")
        fields = below
    for field in fields:
        _print(field)
    return 0


def _print(field: schema.FieldDoc) -> None:
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
