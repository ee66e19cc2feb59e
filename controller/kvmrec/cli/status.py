"""``kvmrec status``: what every object looks like now, from the state file alone.

``-w`` keeps watching: after the table, the lines of the objects whose status changes
(kvmrec/cli/watching.py). ``-l`` selects objects by their labels.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kvmrec import config
from kvmrec.api.objects import ObjectKey
from kvmrec.api.selectors import Selector
from kvmrec.cli import report, selecting, watching, where
from kvmrec.store.base import Store


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "status", help="show each object's conditions and drift (exit 2 if not all synced)"
    )
    where.add_state(parser, store=True)
    parser.add_argument("object", nargs="?", metavar="KIND/NAME", help="only this object")
    parser.add_argument(
        "-o", "--output", choices=["table", "wide", "json", "yaml"], default="table"
    )
    parser.add_argument(
        "-w",
        "--watch",
        action="store_true",
        help="after the report, print the objects whose status changes (Ctrl-C ends)",
    )
    parser.add_argument(
        "--host", default=None, metavar="NAME", help="only what is on this host of a fleet"
    )
    selecting.add_option(parser)
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
    selector = selecting.of(args, "status")
    if selector is None:
        return 1
    settings = where.cli_settings(args)
    store = where.open_store(args, settings, read_only=True)
    if store is None:
        return 1
    try:
        since = store.change_counter()
        result = report.build(store, only, selector, args.host)
        if only is not None and not result["objects"]:
            print(f"kvmrec status: {args.object}: no such object", file=sys.stderr)
            return 1
        if args.watch:
            return watching.interrupted_is_ok(
                lambda: _watch(store, since, result, args.output, only, selector, args.host)
            )
    finally:
        store.close()
    print(report.render(result, args.output))
    return report.exit_code(result, objects_only=only is not None)


def _watch(
    store: Store,
    since: int,
    result: dict[str, Any],
    output: str,
    only: tuple[str, str] | None,
    selector: Selector,
    host: str | None,
) -> None:
    printer = watching.StatusPrinter(output)
    printer.first(result)
    for _ in watching.changes(store, since):
        printer.update(report.build(store, only, selector, host))
