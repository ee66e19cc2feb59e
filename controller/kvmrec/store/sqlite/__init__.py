"""The single-host store: one sqlite file in WAL mode, through the standard library's sqlite3.

``connection`` opens the file and runs its transactions, ``schema`` migrates it, ``codec``
turns records into columns; ``objects``, ``statuses``, ``history``, ``ledger`` and
``sources`` each implement one part of the ``Store`` interface, and ``SqliteStore`` puts
them together. Callers get one through ``kvmrec.store.open``.
"""

from kvmrec.store.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
