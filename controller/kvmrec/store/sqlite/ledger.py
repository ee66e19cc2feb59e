"""The snapshot ledger in the state file: the snapshots kvmrec took, and for which policy."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from kvmrec.store.records import SnapshotRecord
from kvmrec.store.sqlite import codec
from kvmrec.store.sqlite.connection import Database


class LedgerRows:
    """The ``SnapshotLedger`` part of the sqlite store."""

    _db: Database

    def record_snapshot(self, snapshot: SnapshotRecord) -> None:
        with self._db.writing() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO snapshots (domain, name, policy, time, quiesced, memory) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    snapshot.domain,
                    snapshot.name,
                    snapshot.policy,
                    codec.time(snapshot.time),
                    snapshot.quiesced,
                    snapshot.memory,
                ),
            )

    def forget_snapshot(self, domain: str, name: str) -> None:
        with self._db.writing() as conn:
            conn.execute("DELETE FROM snapshots WHERE domain = ? AND name = ?", (domain, name))

    def snapshots(
        self, *, policy: str | None = None, domain: str | None = None
    ) -> Sequence[SnapshotRecord]:
        where: list[str] = []
        params: list[Any] = []
        if policy is not None:
            where.append("policy = ?")
            params.append(policy)
        if domain is not None:
            where.append("domain = ?")
            params.append(domain)
        sql = "SELECT domain, name, policy, time, quiesced, memory FROM snapshots"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._db.query(sql + " ORDER BY time DESC", params)
        return [
            SnapshotRecord(
                domain=domain_,
                name=name,
                policy=policy_,
                time=datetime.fromisoformat(time),
                quiesced=bool(quiesced),
                memory=bool(memory),
            )
            for domain_, name, policy_, time, quiesced, memory in rows
        ]
