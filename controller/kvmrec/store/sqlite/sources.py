"""What the manifest sync keeps besides objects: the files in error, and the one pending
approval of a mass deletion (a row of ``meta``, so it needed no schema change)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime

from kvmrec.api.objects import ObjectKey
from kvmrec.store.records import DeletionApproval, SourceError
from kvmrec.store.sqlite import codec
from kvmrec.store.sqlite.connection import Database

_APPROVAL = "deletion_approval"


class SourceRows:
    """The ``SourceErrors`` and ``Approvals`` parts of the sqlite store."""

    _db: Database

    def set_source_errors(self, errors: Mapping[str, str], now: datetime) -> None:
        with self._db.writing() as conn:
            old = {
                source: (message, time)
                for source, message, time in conn.execute(
                    "SELECT source, message, time FROM source_errors"
                )
            }
            if {s: m for s, (m, _) in old.items()} == dict(errors):
                return
            conn.execute("DELETE FROM source_errors")
            rows = []
            for source, message in sorted(errors.items()):
                before = old.get(source)
                since = before[1] if before and before[0] == message else codec.time(now)
                rows.append((source, message, since))
            conn.executemany(
                "INSERT INTO source_errors (source, message, time) VALUES (?, ?, ?)", rows
            )

    def source_errors(self) -> Sequence[SourceError]:
        rows = self._db.query("SELECT source, message, time FROM source_errors ORDER BY source")
        return [SourceError(s, m, datetime.fromisoformat(t)) for s, m, t in rows]

    def approve_deletions(self, approval: DeletionApproval) -> None:
        value = codec.dump(
            {"keys": [str(k) for k in approval.keys], "expires": codec.time(approval.expires)}
        )
        with self._db.writing() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (_APPROVAL, value)
            )

    def deletion_approval(self) -> DeletionApproval | None:
        row = self._db.one("SELECT value FROM meta WHERE key = ?", (_APPROVAL,))
        if row is None:
            return None
        body = json.loads(row[0])
        keys = tuple(ObjectKey.parse(k) for k in body["keys"])
        return DeletionApproval(keys, datetime.fromisoformat(body["expires"]))

    def consume_deletion_approval(self, digest: str) -> bool:
        with self._db.writing() as conn:
            approval = self.deletion_approval()
            if approval is None or approval.digest != digest:
                return False
            conn.execute("DELETE FROM meta WHERE key = ?", (_APPROVAL,))
            return True
