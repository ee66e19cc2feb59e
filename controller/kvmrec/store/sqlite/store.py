"""``SqliteStore``: every part of the ``Store`` interface on one state file."""

from __future__ import annotations

from pathlib import Path

from kvmrec.api.objects import ObjectKey
from kvmrec.store.sqlite.connection import Database
from kvmrec.store.sqlite.history import HistoryRows
from kvmrec.store.sqlite.ledger import LedgerRows
from kvmrec.store.sqlite.objects import ObjectRows
from kvmrec.store.sqlite.sources import SourceRows
from kvmrec.store.sqlite.statuses import StatusRows


class SqliteStore(ObjectRows, StatusRows, HistoryRows, LedgerRows, SourceRows):
    """A ``Store`` in one sqlite file (``:memory:`` for a private, per-thread one)."""

    def __init__(self, path: Path | str, *, create: bool = True, read_only: bool = False) -> None:
        self.path = Path(path)
        self._db = Database(self.path, create=create and not read_only, read_only=read_only)
        self._keys: set[ObjectKey] | None = None
        self._seen: dict[ObjectKey, str | None] = {}

    def schema_version(self) -> int:
        return self._db.schema_version()

    def change_counter(self) -> int:
        # data_version moves when another connection commits; no table is read.
        return int(self._db.one("PRAGMA data_version")[0])

    def close(self) -> None:
        self._db.close()
