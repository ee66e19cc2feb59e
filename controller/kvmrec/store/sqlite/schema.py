"""The tables of a state file, and the migrations that bring an old file up to date.

Tables: ``objects`` (desired state, one row per kind/name), ``revisions`` (every accepted
spec), ``statuses``, ``events``, ``source_errors``, ``snapshots`` (the ledger),
``reconciles`` (history), and ``meta`` holding the schema version (and the pending approval
of a mass deletion). ``MIGRATIONS`` is an ordered list of frozen DDL; opening a file applies
the ones it has not seen, one transaction each, so an old state file is upgraded in place
and a newer one is refused.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

from kvmrec.store.base import StoreError

Execute = Callable[[str], object]

_SCHEMA_1 = (
    'CREATE TABLE "meta" ("key" TEXT NOT NULL PRIMARY KEY, "value" TEXT NOT NULL)',
    'CREATE TABLE "objects" ("id" INTEGER NOT NULL PRIMARY KEY, "kind" TEXT NOT NULL, '
    '"name" TEXT NOT NULL, "uid" TEXT NOT NULL, "generation" INTEGER NOT NULL, '
    '"digest" TEXT NOT NULL, "spec" TEXT NOT NULL, "labels" TEXT NOT NULL, '
    '"annotations" TEXT NOT NULL, "source" TEXT NOT NULL, "deleting" INTEGER NOT NULL, '
    '"created" TEXT NOT NULL, "updated" TEXT NOT NULL)',
    'CREATE UNIQUE INDEX "object_kind_name" ON "objects" ("kind", "name")',
    'CREATE TABLE "revisions" ("id" INTEGER NOT NULL PRIMARY KEY, "kind" TEXT NOT NULL, '
    '"name" TEXT NOT NULL, "generation" INTEGER NOT NULL, "digest" TEXT NOT NULL, '
    '"spec" TEXT NOT NULL, "source" TEXT NOT NULL, "time" TEXT NOT NULL)',
    'CREATE INDEX "revisionrow_kind_name_generation" ON "revisions" ("kind", "name", "generation")',
    'CREATE TABLE "statuses" ("id" INTEGER NOT NULL PRIMARY KEY, "kind" TEXT NOT NULL, '
    '"name" TEXT NOT NULL, "body" TEXT NOT NULL)',
    'CREATE UNIQUE INDEX "statusrow_kind_name" ON "statuses" ("kind", "name")',
    'CREATE TABLE "events" ("id" INTEGER NOT NULL PRIMARY KEY, "kind" TEXT, "name" TEXT, '
    '"type" TEXT NOT NULL, "reason" TEXT NOT NULL, "message" TEXT NOT NULL, '
    '"time" TEXT NOT NULL)',
    'CREATE INDEX "eventrow_kind_name" ON "events" ("kind", "name")',
    'CREATE TABLE "source_errors" ("source" TEXT NOT NULL PRIMARY KEY, '
    '"message" TEXT NOT NULL, "time" TEXT NOT NULL)',
)
# The snapshots kvmrec took (so a policy prunes only its own).
_SCHEMA_2 = (
    'CREATE TABLE "snapshots" ("id" INTEGER NOT NULL PRIMARY KEY, "domain" TEXT NOT NULL, '
    '"name" TEXT NOT NULL, "policy" TEXT, "time" TEXT NOT NULL, "quiesced" INTEGER NOT NULL, '
    '"memory" INTEGER NOT NULL)',
    'CREATE UNIQUE INDEX "snapshotrow_domain_name" ON "snapshots" ("domain", "name")',
    'CREATE INDEX "snapshotrow_policy" ON "snapshots" ("policy")',
)
# History: the git commit a revision came from, and every reconcile with its outcome.
_SCHEMA_3 = (
    'ALTER TABLE "revisions" ADD COLUMN "commit" TEXT',
    'CREATE TABLE "reconciles" ("id" INTEGER NOT NULL PRIMARY KEY, "kind" TEXT NOT NULL, '
    '"name" TEXT NOT NULL, "time" TEXT NOT NULL, "duration" REAL NOT NULL, '
    '"result" TEXT NOT NULL, "message" TEXT)',
    'CREATE INDEX "reconcilerow_kind_name" ON "reconciles" ("kind", "name")',
    'CREATE INDEX "reconcilerow_time" ON "reconciles" ("time")',
    'CREATE INDEX "eventrow_time" ON "events" ("time")',
)


def _ddl(statements: Sequence[str]) -> Callable[[Execute], None]:
    def migrate(execute: Execute) -> None:
        for statement in statements:
            execute(statement)

    return migrate


# Migration N brings a state file from schema version N-1 to N. Append; never edit.
MIGRATIONS: list[Callable[[Execute], None]] = [_ddl(_SCHEMA_1), _ddl(_SCHEMA_2), _ddl(_SCHEMA_3)]


def version(db: sqlite3.Connection) -> int:
    found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'")
    if found.fetchone() is None:
        return 0
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(db: sqlite3.Connection, where: str, *, upgrade: bool = True) -> None:
    """Apply the migrations ``db`` (in autocommit mode) has not seen; refuse a file newer
    than this kvmrec. ``upgrade=False`` (a read-only command) still creates the schema of a
    file that has none, but refuses to upgrade an older one: the kvmrec running on it may
    be the older version, which the upgraded tables would break.

    The version is read under the write lock: another process opening the same new file
    (the service and a ``kvmrec status`` that found it just created) waits for the first
    one's migrations and then finds nothing left to do, instead of creating the tables a
    second time."""
    if version(db) == len(MIGRATIONS):
        return  # the usual open: nothing to do, and no write lock taken
    db.execute("BEGIN IMMEDIATE")
    try:
        current = version(db)
        if current > len(MIGRATIONS):
            raise StoreError(
                f"{where}: schema version {current} is newer than this kvmrec "
                f"({len(MIGRATIONS)}); upgrade kvmrec"
            )
        if current and not upgrade:
            raise StoreError(
                f"{where}: schema version {current} is older than this kvmrec "
                f"({len(MIGRATIONS)}); `kvmrec run` upgrades it when it starts"
            )
        for number in range(current + 1, len(MIGRATIONS) + 1):
            MIGRATIONS[number - 1](db.execute)
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(number),),
            )
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
