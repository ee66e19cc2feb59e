"""``kvmrec delete KIND/NAME...``: mark objects for deletion in the store.

What a removed manifest does, by name: each object is marked as deleting (a
``ManifestRemoved`` event says by whom) and the host that holds it deletes the live
object as its ``deletionPolicy`` says (``Orphan`` keeps a guest and drops kvmrec's stamp),
then the store forgets it. All or nothing: an unknown object (or a KIND that does not
exist) is named on stderr and nothing is marked, exit 2, as an invalid manifest is; exit 1
is kvmrec's own failure (no store). An object whose manifest file is still in a watched
directory comes back with the next scan of it: delete the file there instead.
``--dry-run`` marks nothing.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kvmrec import config
from kvmrec.api.objects import ObjectKey
from kvmrec.cli import where
from kvmrec.engine.clock import SystemClock
from kvmrec.store.base import Store, StoreError
from kvmrec.store.records import StoredObject

REASON = "ManifestRemoved"


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "delete",
        help="mark objects for deletion (each deleted as its deletionPolicy says)",
    )
    parser.add_argument("objects", nargs="+", metavar="KIND/NAME")
    where.add_state(parser, store=True)
    parser.add_argument("--dry-run", action="store_true", help="say what would be deleted")
    config.add_option(parser)  # last: it tracks the flags added above
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    keys: list[ObjectKey] = []
    for text in args.objects:
        try:
            keys.append(ObjectKey.parse(text))
        except ValueError as exc:
            print(f"kvmrec delete: {exc}", file=sys.stderr)
            return 2
    settings = where.cli_settings(args)
    store = where.open_store(args, settings, read_only=args.dry_run, create=False)
    if store is None:
        return 1
    try:
        return _delete(store, list(dict.fromkeys(keys)), dry_run=args.dry_run)
    except StoreError as exc:
        print(f"kvmrec delete: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()


def _delete(store: Store, keys: list[ObjectKey], *, dry_run: bool) -> int:
    found = {key: store.get(key) for key in keys}
    missing = [key for key, obj in found.items() if obj is None]
    for key in missing:
        print(f"kvmrec delete: {key}: not found", file=sys.stderr)
    if missing:
        print("kvmrec delete: nothing deleted", file=sys.stderr)
        return 2
    now = SystemClock().wall()
    for key, obj in found.items():
        assert obj is not None
        if obj.deleting:
            print(f"{key} is being deleted already")
            continue
        if not dry_run and store.mark_deleting(key, now):
            store.add_event(key, "Normal", REASON, "deleted with kvmrec delete", now)
        print(f"{key} deleted{_policy(obj)}{' (dry run)' if dry_run else ''}")
    return 0


def _policy(obj: StoredObject) -> str:
    policy = obj.spec.get("deletionPolicy")
    return f" (deletionPolicy {policy})" if isinstance(policy, str) else ""
