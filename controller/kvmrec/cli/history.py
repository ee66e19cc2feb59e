"""``kvmrec events`` and ``kvmrec history``: what happened, from the state file alone.

``events [KIND/NAME]`` lists condition changes and actions (created, started, healed,
pruned, ...), newest last; ``-f`` then prints new ones as the service records them, and
``-l`` keeps the events of the objects whose labels match. ``history KIND/NAME`` shows
every accepted revision of an object (generation, spec digest, source file, and the git
commit when the manifest directory is a git work tree) and its recent reconciles with
their duration and result; with ``--diff [REV_A [REV_B]]`` the spec's changes between two
revisions (cli/revision_diff.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from kvmrec import config
from kvmrec import store as stores
from kvmrec.api.objects import ObjectKey
from kvmrec.api.selectors import Selector
from kvmrec.cli import report, revision_diff, selecting, watching, where
from kvmrec.store.base import Store, StoreError
from kvmrec.store.records import Event, Revision


def add_parser(commands: Any) -> None:
    events: argparse.ArgumentParser = commands.add_parser(
        "events", help="what happened to the objects (newest last)"
    )
    events.add_argument("object", nargs="?", metavar="KIND/NAME")
    where.add_state(events, store=True)
    events.add_argument("--limit", type=int, default=100)
    events.add_argument("-o", "--output", choices=["table", "json"], default="table")
    events.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="then print new events as they are recorded (Ctrl-C ends; JSON: one a line)",
    )
    selecting.add_option(events)
    config.add_option(events)  # last: it tracks the flags added above
    events.set_defaults(handler=run_events)
    history: argparse.ArgumentParser = commands.add_parser(
        "history", help="an object's revisions and reconciles"
    )
    history.add_argument("object", metavar="KIND/NAME")
    where.add_state(history, store=True)
    history.add_argument("--limit", type=int, default=20, help="reconciles to show")
    history.add_argument(
        "--diff",
        nargs="*",
        metavar="REV",
        help="the spec's changes between two revisions (generations; default: the last two)",
    )
    history.add_argument("-o", "--output", choices=["table", "json"], default="table")
    config.add_option(history)  # last: it tracks the flags added above
    history.set_defaults(handler=run_history)


def _open(args: argparse.Namespace, command: str) -> tuple[Store, ObjectKey | None] | None:
    key = None
    if args.object:
        try:
            key = ObjectKey.parse(args.object)
        except ValueError as exc:
            print(f"kvmrec {command}: {exc}", file=sys.stderr)
            return None
    try:
        return stores.open(where.cli_settings(args).store_location, read_only=True), key
    except StoreError as exc:
        print(f"kvmrec {command}: {exc}", file=sys.stderr)
        return None


def _when(value: Any) -> str:
    return str(value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"))


def run_events(args: argparse.Namespace) -> int:
    selector = selecting.of(args, "events")
    if selector is None:
        return 1
    opened = _open(args, "events")
    if opened is None:
        return 1
    store, key = opened
    try:
        since = store.change_counter()
        events = _selected(store, key, selector, args.limit)
        if args.follow:
            return watching.interrupted_is_ok(
                lambda: _follow(store, since, key, selector, events, args.output)
            )
    finally:
        store.close()
    rows = [_event_row(e) for e in events]
    if args.output == "json":
        print(json.dumps({"events": rows}, indent=2))
        return 0
    _table([_EVENT_HEADER] + [list(r.values()) for r in rows])
    return 0


_EVENT_HEADER = ["TIME", "OBJECT", "TYPE", "REASON", "MESSAGE"]


def _event_row(event: Event) -> dict[str, str]:
    return {
        "time": _when(event.time),
        "object": str(event.key) if event.key else "-",
        "type": event.type,
        "reason": event.reason,
        "message": event.message,
    }


def _matching(store: Store, selector: Selector) -> set[ObjectKey]:
    return {obj.key for obj in store.list() if selector.matches(obj.labels)}


def _selected(store: Store, key: ObjectKey | None, selector: Selector, limit: int) -> list[Event]:
    """The last ``limit`` events of ``key`` (or all objects) whose objects ``selector``
    matches (events of objects no longer stored have no labels left to match)."""
    if not selector:
        return list(store.events(key, limit=limit))
    keys = _matching(store, selector)
    if key is not None:
        keys &= {key}
    events = [e for k in keys for e in store.events(k, limit=limit)]
    return sorted(events, key=lambda e: e.seq)[-limit:] if limit > 0 else []


def _follow(
    store: Store,
    since: int,
    key: ObjectKey | None,
    selector: Selector,
    events: list[Event],
    output: str,
) -> None:
    """Print ``events``, then every event recorded later, as ``tail -f`` does."""
    newest = store.events(limit=1)
    cursor = max([e.seq for e in [*events, *newest]], default=0)
    rows = [_EVENT_HEADER] + [list(_event_row(e).values()) for e in events]
    sizes = report.widths(rows)
    if output == "json":
        for event in events:
            watching.emit(json.dumps(_event_row(event)))
    else:
        watching.emit("\n".join(report.lines(rows, sizes)))
    for _ in watching.changes(store, since):
        keys = _matching(store, selector) if selector else None
        while batch := store.events(key, limit=500, after=cursor):
            cursor = batch[-1].seq
            shown = [_event_row(e) for e in batch if keys is None or e.key in keys]
            if not shown:
                continue
            if output == "json":
                watching.emit("\n".join(json.dumps(r) for r in shown))
                continue
            new = [list(r.values()) for r in shown]
            sizes = report.widths(new, sizes)
            watching.emit("\n".join(report.lines(new, sizes)))


def run_history(args: argparse.Namespace) -> int:
    opened = _open(args, "history")
    if opened is None:
        return 1
    store, key = opened
    assert key is not None
    try:
        revisions = store.revisions(key)
        reconciles = store.reconciles(key, limit=args.limit)
    finally:
        store.close()
    if not revisions and not reconciles:
        print(f"kvmrec history: {key}: nothing recorded", file=sys.stderr)
        return 1
    if args.diff is not None:
        return _print_diff(key, revisions, args.diff, args.output)
    body: dict[str, list[dict[str, Any]]] = {
        "revisions": [
            {
                "generation": r.generation,
                "digest": r.digest,
                "source": r.source,
                "commit": r.commit,
                "time": _when(r.time),
            }
            for r in revisions
        ],
        "reconciles": [
            {
                "time": _when(r.time),
                "duration": round(r.duration, 4),
                "result": r.result,
                "message": r.message,
            }
            for r in reconciles
        ],
    }
    if args.output == "json":
        print(json.dumps(body, indent=2))
        return 0
    print(f"{key}: revisions")
    _table(
        [["GEN", "DIGEST", "SOURCE", "COMMIT", "TIME"]]
        + [
            [
                str(r["generation"]),
                r["digest"][:12],
                r["source"],
                _commit_cell(r["commit"]),
                r["time"],
            ]
            for r in body["revisions"]
        ]
    )
    print(f"\n{key}: reconciles (last {len(body['reconciles'])})")
    _table(
        [["TIME", "DURATION", "RESULT", "MESSAGE"]]
        + [
            [r["time"], f"{r['duration'] * 1000:.0f} ms", r["result"], r["message"] or ""]
            for r in body["reconciles"]
        ]
    )
    return 0


def _commit_cell(commit: str | None) -> str:
    # Older versions recorded HEAD+dirty for a directory with changes: no file's commit.
    if not commit or commit.endswith("+dirty"):
        return "-"
    return commit[:12]


def _print_diff(
    key: ObjectKey, revisions: Sequence[Revision], wanted: list[str], output: str
) -> int:
    try:
        old, new = revision_diff.pick(revisions, wanted)
    except ValueError as exc:
        print(f"kvmrec history: {key}: {exc}", file=sys.stderr)
        return 1
    text = revision_diff.render(old, new)
    if output == "json":
        body = {"from": old.generation, "to": new.generation, "diff": text}
        print(json.dumps(body, indent=2))
    elif text:
        print(text)
    else:
        print(f"{key}: generations {old.generation} and {new.generation} have the same spec")
    return 0


def _table(rows: list[list[str]]) -> None:
    for line in report.lines(rows, report.widths(rows)):
        print(line)
