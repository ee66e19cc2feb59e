"""One sqlite file, opened in WAL mode, with one connection per thread and one writer at a time.

sqlite allows one writer at a time; writes are serialised by a lock here (cheaper than
retrying on SQLITE_BUSY) and readers never block thanks to WAL. Each thread gets its own
connection, opened with the pragmas on first use and in autocommit mode (transactions are
explicit); statements go straight to it, so sqlite3's per-connection statement cache
prepares each one once. The service's connections are peewee's; a read-only command
(``status``, ``events``) opens its own with the standard library alone, since importing
peewee costs it about 40 ms of a 150 ms budget.

Durability: ``synchronous=NORMAL`` in WAL mode syncs the log at every checkpoint, not at
every commit. A commit is in the log, and so survives the process dying (``kill -9``, OOM,
a crash), as soon as it returns; only a power cut or a kernel crash can lose the last
commits before a checkpoint, and even then the file stays consistent. That is the failure
the service must survive between two steps of a reconcile, and it costs no fsync per write.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kvmrec.store.base import StoreError
from kvmrec.store.sqlite import schema

_PRAGMAS = (("journal_mode", "wal"), ("synchronous", "normal"), ("busy_timeout", 10_000))


class Database:
    """The state file: its connections, its write lock and its transactions."""

    def __init__(self, path: Path, *, create: bool, read_only: bool) -> None:
        self.path = path
        self.read_only = read_only
        memory = str(path) == ":memory:"
        if not memory and not create and not path.exists():
            raise StoreError(f"{path}: no state file (has `kvmrec run` ever run here?)")
        if create and not memory:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._peewee: Any = None
        if not read_only:
            import peewee

            self._peewee = peewee.SqliteDatabase(
                str(path), pragmas=dict(_PRAGMAS), check_same_thread=False
            )
        self.lock = threading.Lock()
        try:
            conn = self.connection()
            with self.lock:
                schema.migrate(conn, str(path), upgrade=not read_only)
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: {exc}") from exc

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (opened, with the pragmas, on first use)."""
        if self._peewee is not None:
            try:
                return self._peewee.connection()  # type: ignore[no-any-return]
            except sqlite3.Error:
                raise
            except Exception as exc:  # peewee's wrapping of sqlite3's own errors
                raise sqlite3.OperationalError(str(exc)) from exc
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            for name, value in _PRAGMAS:
                conn.execute(f"PRAGMA {name} = {value}")
            self._local.conn = conn
        return conn

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of one read."""
        try:
            return self.connection().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        try:
            return self.connection().execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc

    @contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        if self.read_only:
            raise StoreError(f"{self.path}: opened read-only")
        with self.lock:
            conn = self.connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    # A write refused by the file system makes the rollback fail too;
                    # its error would hide the cause.
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"{self.path}: {exc}") from exc
                raise

    def schema_version(self) -> int:
        return schema.version(self.connection())

    def close(self) -> None:
        """Close this thread's connection (the others close with their threads)."""
        if self._peewee is not None:
            self._peewee.close()
            return
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            conn.close()
