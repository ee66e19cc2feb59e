"""History in the state file: one row per reconcile, and the pruning of what is too old."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from kvmrec.api.objects import ObjectKey
from kvmrec.store.records import ReconcileRecord
from kvmrec.store.sqlite import codec
from kvmrec.store.sqlite.connection import Database

_INSERT_RECONCILE = (
    'INSERT INTO "reconciles" (kind, name, time, duration, result, message) '
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def insert(conn: sqlite3.Connection, records: Sequence[ReconcileRecord]) -> None:
    """Add ``records`` inside the caller's transaction."""
    conn.executemany(
        _INSERT_RECONCILE,
        [
            (r.key.kind, r.key.name, codec.time(r.time), r.duration, r.result, r.message)
            for r in records
        ],
    )


class HistoryRows:
    """The ``History`` part of the sqlite store."""

    _db: Database

    def record_reconcile(self, record: ReconcileRecord) -> None:
        with self._db.writing() as conn:
            insert(conn, [record])

    def reconciles(self, key: ObjectKey, limit: int = 50) -> Sequence[ReconcileRecord]:
        rows = self._db.query(
            'SELECT time, duration, result, message FROM "reconciles" '
            "WHERE kind = ? AND name = ? ORDER BY id DESC LIMIT ?",
            (key.kind, key.name, limit),
        )
        return [
            ReconcileRecord(key, datetime.fromisoformat(t), d, r, m) for t, d, r, m in rows[::-1]
        ]

    def prune_history(self, before: datetime) -> int:
        cutoff = codec.time(before)
        removed = 0
        with self._db.writing() as conn:
            for table in ("events", "reconciles"):
                removed += conn.execute(f'DELETE FROM "{table}" WHERE time < ?', (cutoff,)).rowcount
            removed += conn.execute(
                'DELETE FROM "revisions" WHERE time < ? AND id NOT IN '
                '(SELECT MAX(id) FROM "revisions" GROUP BY kind, name)',
                (cutoff,),
            ).rowcount
        return removed
