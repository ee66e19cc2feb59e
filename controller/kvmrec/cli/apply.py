"""``kvmrec apply -f FILE_OR_DIR``: store manifests in the store, as ``kubectl apply`` does.

The files are checked exactly as ``kvmrec validate`` and the service check them (a
directory under StrictModes, sources/trust.py); if any is invalid nothing is stored and
the command exits 2, each problem named by file, field and reason. Otherwise every
manifest goes into the store in one ``apply_many`` and each object is reported
``created``, ``configured`` or ``unchanged``. ``--dry-run`` writes nothing and prints what
would change, with the fields of each ``configured`` object against the stored spec.

The files are recorded by their absolute path, so the same file applied from another
directory is the same source. Exit 0 when stored (or, dry, storable), 2 when a file is
invalid, 1 when the store cannot be opened or written.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kvmrec import config
from kvmrec.api.objects import Manifest
from kvmrec.cli import safety, store_diff, validate, where
from kvmrec.engine.clock import SystemClock
from kvmrec.store.base import Store, StoreError


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "apply",
        help="store manifest files in the store (created, configured or unchanged)",
        description="Check the files as `kvmrec validate` does and store their manifests in "
        "one transaction; nothing is stored if any file is invalid (exit 2).",
    )
    parser.add_argument(
        "-f",
        "--filename",
        dest="paths",
        action="append",
        required=True,
        type=Path,
        metavar="FILE_OR_DIR",
        help="a manifest file or directory (repeatable)",
    )
    where.add_state(parser, store=True)
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would change in the store; write nothing"
    )
    parser.add_argument("-o", "--output", choices=["table", "json"], default="table")
    safety.add_insecure_manifests(parser)
    config.add_option(parser)  # last: it tracks the flags added above
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = where.cli_settings(args)
    paths = [path.absolute() for path in args.paths]
    tally = validate.check_paths(paths, insecure=settings.insecure_manifests, out=sys.stderr)
    if tally.problems:
        print(f"kvmrec apply: {tally.summary()}; nothing applied", file=sys.stderr)
        return 2
    if args.dry_run and settings.store is None and not settings.state.exists():
        changes = [store_diff.change(m, None) for m in tally.manifests]  # nothing stored yet
    else:
        store = where.open_store(args, settings, read_only=args.dry_run)
        if store is None:
            return 1
        try:
            changes = _apply(store, tally.manifests, dry_run=args.dry_run)
        except StoreError as exc:
            print(f"kvmrec apply: {exc}", file=sys.stderr)
            return 1
        finally:
            store.close()
    print(_render(changes, args.output, dry_run=args.dry_run))
    return 0


def _apply(
    store: Store, manifests: Sequence[Manifest], *, dry_run: bool
) -> list[store_diff.Change]:
    changes = [store_diff.change(m, store.get(m.key)) for m in manifests]
    if dry_run or not manifests:
        return changes
    results = store.apply_many(manifests, SystemClock().wall())
    applied = []
    for item in changes:
        result = results[item.key]
        action = (
            store_diff.CREATED
            if result.created
            else store_diff.CONFIGURED
            if result.changed
            else store_diff.UNCHANGED
        )
        fields = item.fields if action == store_diff.CONFIGURED else []
        applied.append(store_diff.Change(item.key, action, result.generation, fields))
    return applied


def _render(changes: list[store_diff.Change], output: str, *, dry_run: bool) -> str:
    if output == "json":
        body = {"objects": [store_diff.as_json(c) for c in changes], "dryRun": dry_run}
        return json.dumps(body, indent=2, default=str)
    suffix = " (dry run)" if dry_run else ""
    lines = []
    for item in changes:
        lines.append(f"{item.key} {item.action}{suffix}")
        if dry_run:
            lines += [
                f"  {f.field}: {_value(f.stored)} -> {_value(f.applied)}" for f in item.fields
            ]
    return "\n".join(lines) if lines else "(no objects)"


def _value(value: Any) -> str:
    return "(none)" if value is None else json.dumps(value, default=str)
