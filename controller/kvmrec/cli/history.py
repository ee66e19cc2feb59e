"""``kvmrec events`` and ``kvmrec history``: what happened, from the state file alone.

``events [KIND/NAME]`` lists condition changes and actions (created, started, healed,
pruned, ...), newest last. ``history KIND/NAME`` shows every accepted revision of an object
(generation, spec digest, source file, and the git commit when the manifest directory is a
git work tree) and its recent reconciles with their duration and result; with
``--diff [REV_A [REV_B]]`` the spec's changes between two revisions (cli/revision_diff.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from kvmrec import config
from kvmrec.api.kinds import ObjectKey
from kvmrec.cli import revision_diff, where
from kvmrec.store.base import StoreError
from kvmrec.store.records import Revision
from kvmrec.store.sqlite import SqliteStore


def add_parser(commands: Any) -> None:
    events: argparse.ArgumentParser = commands.add_parser(
        "events", help="what happened to the objects (newest last)"
    )
    events.add_argument("object", nargs="?", metavar="KIND/NAME")
    where.add_state(events)
    events.add_argument("--limit", type=int, default=100)
    events.add_argument("-o", "--output", choices=["table", "json"], default="table")
    config.add_option(events)  # last: it tracks the flags added above
    events.set_defaults(handler=run_events)
    history: argparse.ArgumentParser = commands.add_parser(
        "history", help="an object's revisions and reconciles"
    )
    history.add_argument("object", metavar="KIND/NAME")
    where.add_state(history)
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


def _open(args: argparse.Namespace, command: str) -> tuple[SqliteStore, ObjectKey | None] | None:
    key = None
    if args.object:
        try:
            key = ObjectKey.parse(args.object)
        except ValueError as exc:
            print(f"kvmrec {command}: {exc}", file=sys.stderr)
            return None
    try:
        return SqliteStore(where.cli_settings(args).state, create=False), key
    except StoreError as exc:
        print(f"kvmrec {command}: {exc}", file=sys.stderr)
        return None


def _when(value: Any) -> str:
    return str(value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"))


def run_events(args: argparse.Namespace) -> int:
    opened = _open(args, "events")
    if opened is None:
        return 1
    store, key = opened
    try:
        events = store.events(key, limit=args.limit)
    finally:
        store.close()
    rows = [
        {
            "time": _when(e.time),
            "object": str(e.key) if e.key else "-",
            "type": e.type,
            "reason": e.reason,
            "message": e.message,
        }
        for e in events
    ]
    if args.output == "json":
        print(json.dumps({"events": rows}, indent=2))
        return 0
    _table(
        [["TIME", "OBJECT", "TYPE", "REASON", "MESSAGE"]]
        + [[r["time"], r["object"], r["type"], r["reason"], r["message"]] for r in rows]
    )
    return 0


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
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        head = "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True))
        print(f"{head}  {row[-1]}".rstrip())
