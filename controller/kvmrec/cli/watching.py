"""Following the state file while the service writes it: ``status -w`` and ``events -f``.

The service is the only writer of its state file. A watching command asks sqlite every
half second whether anyone committed since it last looked (``change_counter``: no table
is read) and reads the objects or events again only then, so a watch costs next to
nothing while nothing happens. Ctrl-C ends a watch, with exit code 0.

``status -w`` prints the table (or one JSON or YAML document per object), then, whenever
the service records a status, the objects whose line changed, and a line for an object
that went away or a manifest file that became invalid or valid again. JSON and YAML lines
change when anything but ``lastReconcileTime`` does (that moves on every resync).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from kvmrec.cli import report
from kvmrec.store.base import Changes

# How often the change counter is read: well under the time a heal takes, and still
# nothing a host would notice.
POLL_SECONDS = 0.5

Key = tuple[str, str, str | None]  # kind, name, host (of a fleet)


def changes(store: Changes, since: int, interval: float = POLL_SECONDS) -> Iterator[None]:
    """Yields whenever another process committed to the state file after ``since`` (a
    ``change_counter()`` read before the caller's first look, so nothing falls between)."""
    marker = since
    while True:
        current = store.change_counter()
        if current != marker:
            marker = current
            yield
        time.sleep(interval)


def interrupted_is_ok(follow: Callable[[], None]) -> int:
    """Run a watch until Ctrl-C, which is how a watch is meant to end."""
    with contextlib.suppress(KeyboardInterrupt):
        follow()
    return 0


def _key(obj: dict[str, Any]) -> Key:
    return obj["kind"], obj["name"], obj.get("host")


def emit(text: str) -> None:
    # Flushed at once: a watch is read through pipes (``| grep``) as it happens.
    print(text, flush=True)


class StatusPrinter:
    """Prints the objects of a status report in one output format, and later only what
    changed."""

    def __init__(self, output: str) -> None:
        self.output = output
        self.wide = output == "wide"
        self.shown: dict[Key, Any] = {}
        self.errors: dict[str, str] = {}
        self.sizes: list[int] = []
        self.hosts = False  # a HOST column, as the first table had

    def _seen(self, obj: dict[str, Any]) -> Any:
        if self.output in ("table", "wide"):
            return report.row(obj, wide=self.wide, hosts=self.hosts)
        return {k: v for k, v in obj.items() if k != "lastReconcileTime"}

    def first(self, result: dict[str, Any]) -> None:
        if self.output in ("table", "wide"):
            self.hosts = report.has_hosts(result)
            rows = [report.header(wide=self.wide, hosts=self.hosts)]
            rows += [report.row(obj, wide=self.wide, hosts=self.hosts) for obj in result["objects"]]
            self.sizes = report.widths(rows)
            emit("\n".join(report.lines(rows, self.sizes)))
            for obj in result["objects"]:
                self.shown[_key(obj)] = self._seen(obj)
            self._errors(result["errors"])
            return
        self.update(result)

    def update(self, result: dict[str, Any]) -> None:
        now: dict[Key, dict[str, Any]] = {_key(o): o for o in result["objects"]}
        changed = [obj for key, obj in now.items() if self.shown.get(key) != self._seen(obj)]
        gone = [key for key in self.shown if key not in now]
        for obj in changed:
            self.shown[_key(obj)] = self._seen(obj)
        for key in gone:
            del self.shown[key]
        if self.output in ("table", "wide"):
            rows = [report.row(obj, wide=self.wide, hosts=self.hosts) for obj in changed]
            rows += [self._removed_row(key) for key in gone]
            if rows:
                self.sizes = report.widths(rows, self.sizes or None)
                emit("\n".join(report.lines(rows, self.sizes)))
        else:
            for obj in changed:
                self._document(obj)
            for kind, name, host in gone:
                on = {"host": host} if host is not None else {}
                self._document({"kind": kind, "name": name, **on, "removed": True})
        self._errors(result["errors"])

    def _removed_row(self, key: Key) -> list[str]:
        on = [key[2] or "-"] if self.hosts else []
        blank = ["-"] * (len(report.header(wide=self.wide)) - 3)
        return [key[0], key[1], *on, *blank, "removed"]

    def _document(self, body: dict[str, Any]) -> None:
        if self.output == "json":
            emit(json.dumps(body, default=str, separators=(",", ":")))
        else:
            import yaml  # only for -o yaml

            emit("---\n" + yaml.safe_dump(body, sort_keys=False).rstrip())

    def _errors(self, errors: list[dict[str, Any]]) -> None:
        now = {e["source"]: e for e in errors}
        for source, error in now.items():
            if self.errors.get(source) == error["message"]:
                continue
            self.errors[source] = error["message"]
            if self.output in ("table", "wide"):
                emit(f"error: {source}: {error['message']}")
            else:
                self._document({"error": error})
        for source in [s for s in self.errors if s not in now]:
            del self.errors[source]
            if self.output in ("table", "wide"):
                emit(f"error resolved: {source}")
            else:
                self._document({"error": {"source": source, "message": None}})
