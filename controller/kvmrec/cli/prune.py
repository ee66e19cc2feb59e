"""``kvmrec prune``: approve, once, the mass deletion the guard holds back.

A pass that would delete most managed objects at once is refused (sources/manifests.py);
``allow_mass_delete`` lifts the guard for good, and takes a restart. This command shows
what the refused pass would delete, asks for a yes (``--yes`` for scripts; with no terminal
to ask on and no ``--yes`` it refuses) and records the approval in the state file: for
exactly that set of objects (a different set is still refused), once, for
:data:`APPROVAL_LIFETIME`. Then it asks the running service to look again (SIGHUP, as
``systemctl reload kvmrec`` does), and the service deletes them.

Exit 0 when approved or when nothing is held back, 1 when refused or on error.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from datetime import UTC, timedelta
from typing import Any, TextIO

from kvmrec import config
from kvmrec import store as stores
from kvmrec.cli import safety, where
from kvmrec.engine.clock import SystemClock
from kvmrec.settings import Settings
from kvmrec.sources import trust
from kvmrec.sources.manifests import Desired, ManifestSync, of_directory
from kvmrec.sources.scanning import scan
from kvmrec.store.base import Store, StoreError
from kvmrec.store.lock import holder
from kvmrec.store.records import DeletionApproval, StoredObject

APPROVAL_LIFETIME = timedelta(minutes=10)
"""Long enough for a service that is restarting or busy to get to it; short enough that a
forgotten approval cannot fire on a directory emptied by accident next week."""


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "prune",
        help="show the deletions the mass-delete guard holds back and approve them once",
        description="List what the mass-delete guard refused to delete and, once confirmed "
        "(--yes for scripts; refused without a terminal), approve exactly that set, once, for "
        f"{APPROVAL_LIFETIME.total_seconds() / 60:g} minutes; the running service then "
        "deletes them without a restart. A different set is still refused.",
    )
    parser.add_argument("--yes", action="store_true", help="approve without asking (for scripts)")
    where.add_manifests(parser)
    where.add_state(parser, store=True)
    safety.add_insecure_manifests(parser)
    config.add_option(parser)  # last: it tracks the flags added above
    parser.set_defaults(handler=run)


def confirm(question: str, *, yes: bool, stdin: TextIO, stderr: TextIO) -> bool:
    """Whether the operator says yes: ``--yes``, or "y"/"yes" typed on a terminal. Without
    a terminal (a pipe, cron) and without ``--yes`` the answer is no: a deletion must not
    be approved by whatever happens to be on standard input."""
    if yes:
        return True
    if not stdin.isatty():
        print("kvmrec prune: not approved: no terminal to ask on; give --yes", file=stderr)
        return False
    print(f"{question} [y/N] ", end="", file=stderr, flush=True)
    answer = stdin.readline().strip().lower()
    if answer in ("y", "yes"):
        return True
    print("kvmrec prune: not approved", file=stderr)
    return False


def held_back(settings: Settings, store: Store) -> Desired:
    """What the service's next pass would make of the manifests: judged as it judges them
    (trust, then ManifestSync with the same guard)."""
    stored = store.list()
    snapshot = scan(settings.manifests)
    if not settings.insecure_manifests:
        expected = {obj.source for obj in stored if of_directory(obj)}
        snapshot = trust.enforce(snapshot, settings.manifests, expected=expected)
    sync = ManifestSync(store, SystemClock(), allow_mass_delete=settings.allow_mass_delete)
    return sync.compute(snapshot, stored)


def _table(objects: list[StoredObject]) -> str:
    rows = [["KIND", "NAME", "DELETION POLICY", "FILE"]]
    for obj in objects:
        policy = str(obj.spec.get("deletionPolicy", "Delete"))
        rows.append([obj.key.kind, obj.key.name, policy, obj.source])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def run(args: argparse.Namespace) -> int:
    settings = where.cli_settings(args)
    try:
        store = stores.open(settings.store_location, create=False)
    except StoreError as exc:
        print(f"kvmrec prune: {exc}", file=sys.stderr)
        return 1
    try:
        return _prune(args, settings, store)
    finally:
        store.close()


def _prune(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    desired = held_back(settings, store)
    if desired.approved is not None:
        print(f"{len(desired.doomed)} deletions are approved already; the service makes them")
        _nudge(settings)
        return 0
    if not desired.held_back:
        print("nothing is held back by the mass-delete guard")
        return 0
    stored = store.list()
    doomed = set(desired.held_back)
    objects = [obj for obj in stored if obj.key in doomed]
    live = sum(1 for obj in stored if not obj.deleting)
    print(f"the mass-delete guard holds back deleting {len(objects)} of {live} managed objects:")
    print(_table(sorted(objects, key=lambda o: o.key)))
    question = f"Delete these {len(objects)} objects?"
    if not confirm(question, yes=args.yes, stdin=sys.stdin, stderr=sys.stderr):
        return 1
    now = SystemClock().wall()
    expires = now + APPROVAL_LIFETIME
    store.approve_deletions(DeletionApproval(tuple(desired.held_back), expires))
    until = expires.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    message = (
        f"deletion approved by hand with kvmrec prune (one of {len(objects)} at once), "
        f"valid until {until}"
    )
    for key in desired.held_back:
        store.add_event(key, "Normal", "DeletionApproved", message, now)
    minutes = APPROVAL_LIFETIME.total_seconds() / 60
    print(
        f"approved: these {len(objects)} deletions, once, for the next {minutes:g} minutes "
        "(a different set is still refused)"
    )
    _nudge(settings)
    return 0


def _nudge(settings: Settings) -> None:
    """Ask the service on this state to rescan now, rather than at its next rescan."""
    if settings.store is not None:
        print(
            f"the service publishing into {settings.store} makes them at its next rescan "
            "(within a minute), or at once when reloaded (SIGHUP)",
            file=sys.stderr,
        )
        return
    pid = holder(settings.state)
    if pid is None:
        print(
            f"no kvmrec service is running on {settings.state}: the next `kvmrec run` on it "
            "makes them, if it starts before the approval expires",
            file=sys.stderr,
        )
        return
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        print(
            f"kvmrec prune: cannot ask the service (pid {pid}) to rescan now "
            f"({exc.strerror}); reload it (`systemctl reload kvmrec`, SIGHUP) to make them",
            file=sys.stderr,
        )
