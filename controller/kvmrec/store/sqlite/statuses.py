"""Statuses and events in the state file.

``record`` is the write every reconcile ends with: the status, its events and the record of
the reconcile in one transaction. Every event is logged once it is stored (``logs.event``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from kvmrec import logs
from kvmrec.api.objects import ObjectKey
from kvmrec.store.base import StoreError
from kvmrec.store.records import (
    Convergence,
    Event,
    ReconcileRecord,
    Status,
    StatusWrite,
    StoredObject,
)
from kvmrec.store.sqlite import codec, history
from kvmrec.store.sqlite.connection import Database

_PUT_STATUS = "INSERT OR REPLACE INTO statuses (kind, name, body) VALUES (?, ?, ?)"
_ADD_EVENT = (
    "INSERT INTO events (kind, name, type, reason, message, time) VALUES (?, ?, ?, ?, ?, ?)"
)
# An object and its status in one statement (a LEFT JOIN: a status may exist alone, and an
# object without a status yet is the common case of a first reconcile).
_OBJECT_WITH_STATUS = (
    f"SELECT {', '.join('o.' + c.strip() for c in codec.OBJECT_COLUMNS.split(','))}, s.body "
    "FROM objects o LEFT JOIN statuses s ON s.kind = o.kind AND s.name = o.name "
    "WHERE o.kind = ? AND o.name = ?"
)
_EVENT_COLUMNS = "id, kind, name, type, reason, message, time"
# Each object's generation beside its status's observed generation and how many of Ready
# and Synced it says True (a status holds one condition of a type): sqlite's JSON functions
# read the two fields in C, where decoding 1,000 statuses whole took 15-50 ms.
_CONVERGENCE = (
    "SELECT o.kind, o.name, o.generation, o.deleting, s.body IS NOT NULL, "
    "coalesce(json_extract(s.body, '$.observedGeneration'), 0), "
    "(SELECT count(*) FROM json_each(s.body, '$.conditions') c "
    "WHERE json_extract(c.value, '$.type') IN ('Ready', 'Synced') "
    "AND json_extract(c.value, '$.status') = 'True') "
    "FROM objects o LEFT JOIN statuses s ON s.kind = o.kind AND s.name = o.name"
)


class StatusRows:
    """The ``Statuses`` part of the sqlite store."""

    _db: Database
    guards_status_writes = False  # the last write wins

    def get_status(self, key: ObjectKey) -> Status | None:
        row = self._db.one(
            "SELECT body FROM statuses WHERE kind = ? AND name = ?", (key.kind, key.name)
        )
        return codec.status(row[0]) if row else None

    def get_with_status(self, key: ObjectKey) -> tuple[StoredObject | None, Status | None]:
        row = self._db.one(_OBJECT_WITH_STATUS, (key.kind, key.name))
        if row is None:
            return None, self.get_status(key)
        return codec.stored_object(row[:-1]), codec.status(row[-1]) if row[-1] else None

    def statuses(self) -> Mapping[ObjectKey, Status]:
        rows = self._db.query("SELECT kind, name, body FROM statuses")
        return {ObjectKey(kind, name): codec.status(body) for kind, name, body in rows}

    def host_statuses(
        self, key: ObjectKey | None = None
    ) -> Sequence[tuple[ObjectKey, str | None, Status]]:
        if key is None:
            found = self.statuses()
        else:
            status = self.get_status(key)
            found = {key: status} if status is not None else {}
        return [(k, None, found[k]) for k in sorted(found)]

    def convergence(self) -> Mapping[ObjectKey, Convergence]:
        return {
            ObjectKey(kind, name): Convergence(
                generation, bool(deleting), observed if has_status else None, true == 2
            )
            for kind, name, generation, deleting, has_status, observed, true in self._db.query(
                _CONVERGENCE
            )
        }

    def record(
        self,
        key: ObjectKey,
        status: Status,
        events: Sequence[tuple[str, str, str]],
        now: datetime,
        *,
        reconcile: ReconcileRecord | None = None,
    ) -> None:
        self._write([StatusWrite(key, status, events, now, reconcile)])

    def record_many(self, writes: Sequence[StatusWrite]) -> Sequence[StoreError | None]:
        # One transaction (a group commit: the pages it changes are written once); if it
        # fails, each alone, so that one write's problem is only that write's.
        try:
            self._write(writes)
            return [None] * len(writes)
        except StoreError as exc:
            if len(writes) == 1:
                return [exc]
        failures: list[StoreError | None] = []
        for write in writes:
            try:
                self._write([write])
                failures.append(None)
            except StoreError as exc:
                failures.append(exc)
        return failures

    def _write(self, writes: Sequence[StatusWrite]) -> None:
        # A statement per table for all the writes: each row costs sqlite a few
        # microseconds, and each call from Python as much again.
        statuses = [
            (w.key.kind, w.key.name, codec.status_body(w.status))
            for w in writes
            if w.status is not None
        ]
        events = [
            (w.key.kind, w.key.name, *event, codec.time(w.now))
            for w in writes
            for event in w.events
        ]
        reconciles = [w.reconcile for w in writes if w.reconcile is not None]
        with self._db.writing() as conn:
            if statuses:
                conn.executemany(_PUT_STATUS, statuses)
            if events:
                conn.executemany(_ADD_EVENT, events)
            if reconciles:
                history.insert(conn, reconciles)
        for write in writes:
            for type_, reason, message in write.events:
                logs.event(write.key, type_, reason, message)

    def add_event(
        self, key: ObjectKey | None, type_: str, reason: str, message: str, now: datetime
    ) -> None:
        kind, name = (key.kind, key.name) if key else (None, None)
        with self._db.writing() as conn:
            conn.execute(_ADD_EVENT, (kind, name, type_, reason, message, codec.time(now)))
        logs.event(key, type_, reason, message)

    def events(
        self, key: ObjectKey | None = None, limit: int = 100, *, after: int | None = None
    ) -> Sequence[Event]:
        where: list[str] = []
        params: list[Any] = []
        if after is not None:
            where.append("id > ?")
            params.append(after)
        if key is not None:
            where.append("kind = ? AND name = ?")
            params += [key.kind, key.name]
        sql = f"SELECT {_EVENT_COLUMNS} FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id" if after is not None else " ORDER BY id DESC"
        rows = self._db.query(sql + " LIMIT ?", (*params, limit))
        if after is None:
            rows.reverse()
        return [
            Event(
                time=datetime.fromisoformat(time),
                key=ObjectKey(kind, str(name)) if kind else None,
                type=type_,
                reason=reason,
                message=message,
                seq=seq,
            )
            for seq, kind, name, type_, reason, message, time in rows
        ]
