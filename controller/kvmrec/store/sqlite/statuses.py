"""Statuses and events in the state file.

``record`` is the write every reconcile ends with: the status, its events and the record of
the reconcile in one transaction. Every event is logged once it is stored (``logs.event``).

A status is never written over one this store has not seen: each read of a status (alone
or with its object) is remembered, and the write replaces the row only while it still
holds what was read. Else the status is not written (``StatusConflict``; the write's
events and history record are), and the reconcile is retried from a fresh read: what
``kvmrec snapshot revert`` (another process) writes while the service reconciles the
domain is not lost. A status never read here is written as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from kvmrec import logs
from kvmrec.api.objects import ObjectKey
from kvmrec.store.base import StatusConflict, StoreError
from kvmrec.store.records import Event, ReconcileRecord, Status, StatusWrite, StoredObject
from kvmrec.store.sqlite import codec, history
from kvmrec.store.sqlite.connection import Database

if TYPE_CHECKING:
    from kvmrec.store.convergence import Convergence

_PUT_STATUS = "INSERT OR REPLACE INTO statuses (kind, name, body) VALUES (?, ?, ?)"
# The guarded writes: over the body that was read, or where none was.
_REPLACE_STATUS = "UPDATE statuses SET body = ? WHERE kind = ? AND name = ? AND body = ?"
_ADD_STATUS = (
    "INSERT INTO statuses (kind, name, body) VALUES (?, ?, ?) ON CONFLICT (kind, name) DO NOTHING"
)
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
_UNSEEN = object()  # a key whose status was never read here
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
    # Key -> the status body last read or written here (None: read, and there was none).
    _seen: dict[ObjectKey, str | None]

    def get_status(self, key: ObjectKey) -> Status | None:
        row = self._db.one(
            "SELECT body FROM statuses WHERE kind = ? AND name = ?", (key.kind, key.name)
        )
        return self._remember(key, row[0] if row else None)

    def get_with_status(self, key: ObjectKey) -> tuple[StoredObject | None, Status | None]:
        return self._object_with_status(key)

    def _object_with_status(self, key: ObjectKey) -> tuple[StoredObject | None, Status | None]:
        row = self._db.one(_OBJECT_WITH_STATUS, (key.kind, key.name))
        if row is None:
            return None, self.get_status(key)
        return codec.stored_object(row[:-1]), self._remember(key, row[-1])

    def get_many_with_status(
        self, keys: Sequence[ObjectKey]
    ) -> Mapping[ObjectKey, tuple[StoredObject | None, Status | None]]:
        # Each alone: a local read costs no round trip, and one query for a batch was no
        # faster (28.4 against 27.7 us a key, the decoding being most of it).
        return {key: self._object_with_status(key) for key in keys}

    def _remember(self, key: ObjectKey, body: str | None) -> Status | None:
        self._seen[key] = body
        return codec.status(body) if body else None

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
        from kvmrec.store.convergence import Convergence  # not for a read-only command

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
        failure = self._write_alone(StatusWrite(key, status, events, now, reconcile))
        if failure is not None:
            raise failure

    def record_many(self, writes: Sequence[StatusWrite]) -> Sequence[StoreError | None]:
        # One transaction (a group commit: the pages it changes are written once); if it
        # fails, each alone, so that one write's problem is only that write's.
        if len(writes) == 1:
            return [self._write_alone(writes[0])]
        try:
            self._write(writes)
            return [None] * len(writes)
        except StoreError:
            return [self._write_alone(write) for write in writes]

    def _write_alone(self, write: StatusWrite) -> StoreError | None:
        try:
            self._write([write])
        except StatusConflict as exc:
            self._seen.pop(write.key, None)  # read again before the next write
            # What the reconcile did is still told: its events and history record.
            try:
                self._write([replace(write, status=None)])
            except StoreError as failure:
                return failure
            return exc
        except StoreError as exc:
            return exc
        return None

    def _write(self, writes: Sequence[StatusWrite]) -> None:
        # A statement per table and kind of write for all the writes: each row costs sqlite
        # a few microseconds, and each call from Python as much again.
        bodies = {w.key: codec.status_body(w.status) for w in writes if w.status is not None}
        unseen, added, replaced = [], [], []
        for key, body in bodies.items():
            seen = self._seen.get(key, _UNSEEN)
            if seen is _UNSEEN:
                unseen.append((key.kind, key.name, body))
            elif seen is None:
                added.append((key.kind, key.name, body))
            else:
                replaced.append((body, key.kind, key.name, seen))
        events = [
            (w.key.kind, w.key.name, *event, codec.time(w.now))
            for w in writes
            for event in w.events
        ]
        reconciles = [w.reconcile for w in writes if w.reconcile is not None]
        with self._db.writing() as conn:
            if unseen:
                conn.executemany(_PUT_STATUS, unseen)
            for statement, rows in ((_ADD_STATUS, added), (_REPLACE_STATUS, replaced)):
                if rows and conn.executemany(statement, rows).rowcount != len(rows):
                    raise StatusConflict(
                        f"{self._db.path}: the status was written by another client since it "
                        "was read here"
                    )
            if events:
                conn.executemany(_ADD_EVENT, events)
            if reconciles:
                history.insert(conn, reconciles)
        self._seen.update(bodies)
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
