"""``kvmrec status``: what every object looks like now, from the state file alone."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kvmrec import config
from kvmrec.api.kinds import ObjectKey
from kvmrec.cli import report, where
from kvmrec.store.base import StoreError
from kvmrec.store.sqlite import SqliteStore


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "status", help="show each object's conditions and drift (exit 2 if not all synced)"
    )
    where.add_state(parser)
    parser.add_argument("object", nargs="?", metavar="KIND/NAME", help="only this object")
    parser.add_argument(
        "-o", "--output", choices=["table", "wide", "json", "yaml"], default="table"
    )
    config.add_option(parser)  # last: it tracks the flags added above
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    only = None
    if args.object:
        try:
            key = ObjectKey.parse(args.object)
        except ValueError as exc:
            print(f"kvmrec status: {exc}", file=sys.stderr)
            return 1
        only = (key.kind, key.name)
    settings = where.cli_settings(args)
    try:
        store = SqliteStore(settings.state, create=False)
    except StoreError as exc:
        print(f"kvmrec status: {exc}", file=sys.stderr)
        return 1
    try:
        result = report.build(store, only)
    finally:
        store.close()
    if only is not None and not result["objects"]:
        print(f"kvmrec status: {args.object}: no such object", file=sys.stderr)
        return 1
    print(report.render(result, args.output))
    return report.exit_code(result, objects_only=only is not None)
