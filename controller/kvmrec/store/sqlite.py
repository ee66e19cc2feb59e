"""The single-host store: one sqlite file, written through peewee, in WAL mode.

Tables: ``objects`` (desired state, one row per kind/name), ``revisions`` (every accepted
spec), ``statuses``, ``events``, ``source_errors``, and ``meta`` holding the schema version.
``MIGRATIONS`` is an ordered list; opening a file applies the ones it has not seen, in one
transaction each, so an old state file is upgraded in place and a newer one is refused.

sqlite allows one writer at a time; writes are serialised by a lock here (cheaper than
retrying on SQLITE_BUSY) and readers never block thanks to WAL. Each thread gets its own
connection (peewee's default). Every event written is logged once it is stored (logs.event).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import peewee

from kvmrec import logs
from kvmrec.api.objects import Manifest, ObjectKey
from kvmrec.store.base import StoreError
from kvmrec.store.records import (
    ApplyResult,
    Condition,
    DeletionApproval,
    Drift,
    Event,
    ReconcileRecord,
    Revision,
    SnapshotRecord,
    SourceError,
    Status,
    StoredObject,
)


def _dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class _Tables:
    """The peewee models, bound to one database (so tests can open several stores)."""

    def __init__(self, db: peewee.SqliteDatabase) -> None:
        class Base(peewee.Model):
            class Meta:
                database = db

        class Meta(Base):
            key = peewee.TextField(primary_key=True)
            value = peewee.TextField()

            class Meta:
                table_name = "meta"

        class Object(Base):
            kind = peewee.TextField()
            name = peewee.TextField()
            uid = peewee.TextField()
            generation = peewee.IntegerField()
            digest = peewee.TextField()
            spec = peewee.TextField()
            labels = peewee.TextField(default="{}")
            annotations = peewee.TextField(default="{}")
            source = peewee.TextField()
            deleting = peewee.BooleanField(default=False)
            created = peewee.TextField()
            updated = peewee.TextField()

            class Meta:
                table_name = "objects"
                indexes = ((("kind", "name"), True),)

        class RevisionRow(Base):
            id = peewee.AutoField()
            kind = peewee.TextField()
            name = peewee.TextField()
            generation = peewee.IntegerField()
            digest = peewee.TextField()
            spec = peewee.TextField()
            source = peewee.TextField()
            time = peewee.TextField()
            commit = peewee.TextField(null=True)

            class Meta:
                table_name = "revisions"
                indexes = ((("kind", "name", "generation"), False),)

        class StatusRow(Base):
            kind = peewee.TextField()
            name = peewee.TextField()
            body = peewee.TextField()

            class Meta:
                table_name = "statuses"
                indexes = ((("kind", "name"), True),)

        class EventRow(Base):
            id = peewee.AutoField()
            kind = peewee.TextField(null=True)
            name = peewee.TextField(null=True)
            type = peewee.TextField()
            reason = peewee.TextField()
            message = peewee.TextField()
            time = peewee.TextField()

            class Meta:
                table_name = "events"
                indexes = ((("kind", "name"), False),)

        class SourceErrorRow(Base):
            source = peewee.TextField(primary_key=True)
            message = peewee.TextField()
            time = peewee.TextField()

            class Meta:
                table_name = "source_errors"

        class SnapshotRow(Base):
            domain = peewee.TextField()
            name = peewee.TextField()
            policy = peewee.TextField(null=True)
            time = peewee.TextField()
            quiesced = peewee.BooleanField(default=False)
            memory = peewee.BooleanField(default=False)

            class Meta:
                table_name = "snapshots"
                indexes = ((("domain", "name"), True), (("policy",), False))

        class ReconcileRow(Base):
            id = peewee.AutoField()
            kind = peewee.TextField()
            name = peewee.TextField()
            time = peewee.TextField()
            duration = peewee.FloatField()
            result = peewee.TextField()
            message = peewee.TextField(null=True)

            class Meta:
                table_name = "reconciles"

        self.reconciles = ReconcileRow
        self.meta = Meta
        self.objects = Object
        self.revisions = RevisionRow
        self.statuses = StatusRow
        self.events = EventRow
        self.source_errors = SourceErrorRow
        self.snapshots = SnapshotRow


# Migrations are frozen DDL, not the peewee models of the day: a model that gains a column
# must not change what an old migration creates.
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


def _ddl(statements: Sequence[str]) -> Callable[[_Tables], None]:
    def migrate(tables: _Tables) -> None:
        database = tables.meta._meta.database
        for statement in statements:
            database.execute_sql(statement)

    return migrate


# Migration N brings a state file from schema version N-1 to N. Append; never edit.
MIGRATIONS: list[Callable[[_Tables], None]] = [_ddl(_SCHEMA_1), _ddl(_SCHEMA_2), _ddl(_SCHEMA_3)]


class SqliteStore:
    """A ``Store`` in one sqlite file."""

    def __init__(self, path: Path | str, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise StoreError(f"{self.path}: no state file (has `kvmrec run` ever run here?)")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = peewee.SqliteDatabase(
            str(self.path),
            pragmas={
                "journal_mode": "wal",
                # NORMAL in WAL mode is durable against process crashes, which is what a
                # kill -9 of the service is; only a power cut can lose the last commits.
                "synchronous": "normal",
                "busy_timeout": 10_000,
            },
            check_same_thread=False,
        )
        self._tables = _Tables(self._db)
        self._write = threading.Lock()
        # The keys of all objects, kept in memory: the periodic resync asks for them often
        # and this process is the only writer of its state file.
        self._keys: set[ObjectKey] | None = None
        try:
            self._db.connect(reuse_if_open=True)
            self._migrate()
        except peewee.DatabaseError as exc:
            raise StoreError(f"{self.path}: {exc}") from exc

    def _sql(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """A plain SQL statement on this thread's connection (peewee's stubs leave it
        untyped)."""
        return self._db.execute_sql(sql, params)  # type: ignore[no-untyped-call]

    # -- schema --------------------------------------------------------------------------

    def schema_version(self) -> int:
        if not self._db.table_exists("meta"):
            return 0
        row = self._tables.meta.get_or_none(self._tables.meta.key == "schema_version")
        return int(row.value) if row else 0

    def _migrate(self) -> None:
        with self._write:
            current = self.schema_version()
            if current > len(MIGRATIONS):
                raise StoreError(
                    f"{self.path}: schema version {current} is newer than this kvmrec "
                    f"({len(MIGRATIONS)}); upgrade kvmrec"
                )
            for version in range(current + 1, len(MIGRATIONS) + 1):
                with self._db.atomic():
                    MIGRATIONS[version - 1](self._tables)
                    self._tables.meta.insert(
                        key="schema_version", value=str(version)
                    ).on_conflict_replace().execute()

    @contextmanager
    def _writing(self) -> Iterator[None]:
        with self._write:
            try:
                with self._db.atomic():
                    yield
            except peewee.OperationalError as exc:
                # A write refused by the file system makes the rollback fail too; the
                # rollback's error ("no transaction is active") would hide the cause.
                cause = exc.__context__
                if isinstance(cause, peewee.DatabaseError) and "rollback" in str(exc):
                    exc = cause  # type: ignore[assignment]
                raise StoreError(f"{self.path}: {exc}") from exc

    # -- objects -------------------------------------------------------------------------

    def apply(self, manifest: Manifest, now: datetime) -> ApplyResult:
        return self.apply_many([manifest], now)[manifest.key]

    def apply_many(
        self,
        manifests: Sequence[Manifest],
        now: datetime,
        commits: str | Mapping[str, str] | None = None,
    ) -> dict[ObjectKey, ApplyResult]:
        """Store many manifests in one transaction (a directory of a thousand files is one
        commit, not a thousand)."""
        t = self._tables
        stamp = _time(now)
        results: dict[ObjectKey, ApplyResult] = {}
        created: list[dict[str, Any]] = []
        revisions: list[dict[str, Any]] = []
        with self._writing():
            existing = {(row.kind, row.name): row for row in t.objects.select()}
            for manifest in manifests:
                key = manifest.key
                digest = manifest.digest
                commit = commits.get(manifest.source) if isinstance(commits, Mapping) else commits
                spec = _dump(manifest.spec)
                labels = _dump(dict(manifest.labels))
                annotations = _dump(dict(manifest.annotations))
                row = existing.get((key.kind, key.name))
                if row is None:
                    created.append(
                        {
                            "kind": key.kind,
                            "name": key.name,
                            "uid": str(uuid.uuid4()),
                            "generation": 1,
                            "digest": digest,
                            "spec": spec,
                            "labels": labels,
                            "annotations": annotations,
                            "source": manifest.source,
                            "deleting": False,
                            "created": stamp,
                            "updated": stamp,
                        }
                    )
                    revisions.append(
                        _revision_row(key, 1, digest, spec, manifest.source, stamp, commit)
                    )
                    results[key] = ApplyResult(generation=1, changed=True, created=True)
                    continue
                changed = (
                    row.digest != digest
                    or row.labels != labels
                    or row.annotations != annotations
                    or row.source != manifest.source
                    or row.deleting
                )
                if not changed:
                    results[key] = ApplyResult(row.generation, changed=False, created=False)
                    continue
                if row.digest != digest:
                    row.generation += 1
                    revisions.append(
                        _revision_row(
                            key, row.generation, digest, spec, manifest.source, stamp, commit
                        )
                    )
                row.digest, row.spec, row.labels = digest, spec, labels
                row.annotations, row.source = annotations, manifest.source
                row.deleting, row.updated = False, stamp
                row.save()
                results[key] = ApplyResult(row.generation, changed=True, created=False)
            # 100 rows of 12 columns stays far below sqlite's limit on bound variables.
            for batch in peewee.chunked(created, 100):
                t.objects.insert_many(batch).execute()
            for batch in peewee.chunked(revisions, 100):
                t.revisions.insert_many(batch).execute()
            if self._keys is not None:
                self._keys.update(results)
        return results

    def mark_deleting(self, key: ObjectKey, now: datetime) -> bool:
        t = self._tables
        with self._writing():
            updated = (
                t.objects.update(deleting=True, updated=_time(now))
                .where(
                    (t.objects.kind == key.kind)
                    & (t.objects.name == key.name)
                    & (t.objects.deleting == False)  # noqa: E712 (peewee expression)
                )
                .execute()
            )
        return bool(updated)

    def remove(self, key: ObjectKey) -> None:
        t = self._tables
        with self._writing():
            t.objects.delete().where(
                (t.objects.kind == key.kind) & (t.objects.name == key.name)
            ).execute()
            t.statuses.delete().where(
                (t.statuses.kind == key.kind) & (t.statuses.name == key.name)
            ).execute()
            if self._keys is not None:
                self._keys.discard(key)

    def get(self, key: ObjectKey) -> StoredObject | None:
        # Plain SQL on the paths every reconcile takes: peewee's query builder costs more
        # than sqlite's execution here.
        cursor = self._sql(_GET_OBJECT, (key.kind, key.name))
        row = cursor.fetchone()
        return _stored_object(row) if row else None

    def list(self, kind: str | None = None) -> Sequence[StoredObject]:
        # Plain SQL as in get: `kvmrec status` reads every object, and building a peewee
        # model per row costs more than the rest of the command.
        if kind is None:
            rows = self._sql(_LIST_OBJECTS + " ORDER BY kind, name").fetchall()
        else:
            rows = self._sql(_LIST_OBJECTS + " WHERE kind = ? ORDER BY name", (kind,)).fetchall()
        return [_stored_object(row) for row in rows]

    def keys(self) -> Sequence[ObjectKey]:
        with self._write:
            if self._keys is None:
                rows = self._sql("SELECT kind, name FROM objects").fetchall()
                self._keys = {ObjectKey(kind, name) for kind, name in rows}
            return sorted(self._keys)

    def revisions(self, key: ObjectKey) -> Sequence[Revision]:
        t = self._tables
        query = (
            t.revisions.select()
            .where((t.revisions.kind == key.kind) & (t.revisions.name == key.name))
            .order_by(t.revisions.generation, t.revisions.id)
        )
        return [
            Revision(
                key=key,
                generation=row.generation,
                digest=row.digest,
                spec=json.loads(row.spec),
                source=row.source,
                time=datetime.fromisoformat(row.time),
                commit=row.commit,
            )
            for row in query
        ]

    # -- status --------------------------------------------------------------------------

    def get_status(self, key: ObjectKey) -> Status | None:
        row = self._sql(_GET_STATUS, (key.kind, key.name)).fetchone()
        return _status_from(json.loads(row[0])) if row else None

    def statuses(self) -> Mapping[ObjectKey, Status]:
        rows = self._sql("SELECT kind, name, body FROM statuses").fetchall()
        return {ObjectKey(kind, name): _status_from(json.loads(body)) for kind, name, body in rows}

    def put_status(self, key: ObjectKey, status: Status) -> None:
        self.record(key, status, (), datetime.now(UTC))

    def record(
        self,
        key: ObjectKey,
        status: Status,
        events: Sequence[tuple[str, str, str]],
        now: datetime,
    ) -> None:
        body = _dump(_status_to(status))
        stamp = _time(now)
        with self._writing():
            self._sql(_PUT_STATUS, (key.kind, key.name, body))
            for type_, reason, message in events:
                self._sql(_ADD_EVENT, (key.kind, key.name, type_, reason, message, stamp))
        for type_, reason, message in events:
            logs.event(key, type_, reason, message)

    # -- events and errors ---------------------------------------------------------------

    def add_event(
        self, key: ObjectKey | None, type_: str, reason: str, message: str, now: datetime
    ) -> None:
        with self._writing():
            self._tables.events.create(
                kind=key.kind if key else None,
                name=key.name if key else None,
                type=type_,
                reason=reason,
                message=message,
                time=_time(now),
            )
        logs.event(key, type_, reason, message)

    def events(
        self, key: ObjectKey | None = None, limit: int = 100, *, after: int | None = None
    ) -> Sequence[Event]:
        t = self._tables
        if after is None:
            query = t.events.select().order_by(t.events.id.desc()).limit(limit)
        else:
            query = t.events.select().where(t.events.id > after).order_by(t.events.id)
            query = query.limit(limit)
        if key is not None:
            query = query.where((t.events.kind == key.kind) & (t.events.name == key.name))
        rows = list(query) if after is not None else list(query)[::-1]
        return [
            Event(
                time=datetime.fromisoformat(row.time),
                key=ObjectKey(row.kind, str(row.name)) if row.kind else None,
                type=row.type,
                reason=row.reason,
                message=row.message,
                seq=row.id,
            )
            for row in rows
        ]

    def change_counter(self) -> int:
        """A number that moves whenever another connection commits a write to the file.
        Cheap (no table is read): a watching command polls it to know when to read again."""
        return int(self._sql("PRAGMA data_version").fetchone()[0])

    def set_source_errors(self, errors: Mapping[str, str], now: datetime) -> None:
        t = self._tables
        with self._writing():
            old = {row.source: row for row in t.source_errors.select()}
            if {s: r.message for s, r in old.items()} == dict(errors):
                return
            t.source_errors.delete().execute()
            for source, message in sorted(errors.items()):
                since = (
                    old[source].time
                    if source in old and old[source].message == message
                    else _time(now)
                )
                t.source_errors.create(source=source, message=message, time=since)

    def source_errors(self) -> Sequence[SourceError]:
        t = self._tables
        return [
            SourceError(row.source, row.message, datetime.fromisoformat(row.time))
            for row in t.source_errors.select().order_by(t.source_errors.source)
        ]

    # -- history -------------------------------------------------------------------------

    def record_reconcile(self, record: ReconcileRecord) -> None:
        with self._writing():
            self._sql(
                'INSERT INTO "reconciles" (kind, name, time, duration, result, message) '
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.key.kind,
                    record.key.name,
                    _time(record.time),
                    record.duration,
                    record.result,
                    record.message,
                ),
            )

    def reconciles(self, key: ObjectKey, limit: int = 50) -> Sequence[ReconcileRecord]:
        rows = self._sql(
            'SELECT time, duration, result, message FROM "reconciles" '
            "WHERE kind = ? AND name = ? ORDER BY id DESC LIMIT ?",
            (key.kind, key.name, limit),
        ).fetchall()
        return [
            ReconcileRecord(key, datetime.fromisoformat(t), d, r, m) for t, d, r, m in rows[::-1]
        ]

    def prune_history(self, before: datetime) -> int:
        """Forget events, reconciles and revisions older than ``before`` (the newest revision
        of each object always stays); returns how many rows went."""
        cutoff = _time(before)
        removed = 0
        with self._writing():
            for table in ("events", "reconciles"):
                removed += int(
                    self._sql(f'DELETE FROM "{table}" WHERE time < ?', (cutoff,)).rowcount
                )
            removed += int(
                self._sql(
                    'DELETE FROM "revisions" WHERE time < ? AND id NOT IN '
                    '(SELECT MAX(id) FROM "revisions" GROUP BY kind, name)',
                    (cutoff,),
                ).rowcount
            )
        return removed

    # -- snapshots -----------------------------------------------------------------------

    def record_snapshot(self, snapshot: SnapshotRecord) -> None:
        with self._writing():
            self._tables.snapshots.insert(
                domain=snapshot.domain,
                name=snapshot.name,
                policy=snapshot.policy,
                time=_time(snapshot.time),
                quiesced=snapshot.quiesced,
                memory=snapshot.memory,
            ).on_conflict_replace().execute()

    def forget_snapshot(self, domain: str, name: str) -> None:
        t = self._tables
        with self._writing():
            t.snapshots.delete().where(
                (t.snapshots.domain == domain) & (t.snapshots.name == name)
            ).execute()

    def snapshots(
        self, *, policy: str | None = None, domain: str | None = None
    ) -> Sequence[SnapshotRecord]:
        t = self._tables
        query = t.snapshots.select().order_by(t.snapshots.time.desc())
        if policy is not None:
            query = query.where(t.snapshots.policy == policy)
        if domain is not None:
            query = query.where(t.snapshots.domain == domain)
        return [
            SnapshotRecord(
                domain=row.domain,
                name=row.name,
                policy=row.policy,
                time=datetime.fromisoformat(row.time),
                quiesced=bool(row.quiesced),
                memory=bool(row.memory),
            )
            for row in query
        ]

    # -- the one pending mass-deletion approval (a row of ``meta``: no schema change) -----

    def approve_deletions(self, approval: DeletionApproval) -> None:
        value = _dump({"keys": [str(k) for k in approval.keys], "expires": _time(approval.expires)})
        with self._writing():
            self._tables.meta.insert(key=_APPROVAL, value=value).on_conflict_replace().execute()

    def deletion_approval(self) -> DeletionApproval | None:
        row = self._tables.meta.get_or_none(self._tables.meta.key == _APPROVAL)
        if row is None:
            return None
        body = json.loads(row.value)
        keys = tuple(ObjectKey.parse(k) for k in body["keys"])
        return DeletionApproval(keys, datetime.fromisoformat(body["expires"]))

    def consume_deletion_approval(self, digest: str) -> bool:
        with self._writing():
            approval = self.deletion_approval()
            if approval is None or approval.digest != digest:
                return False
            self._tables.meta.delete().where(self._tables.meta.key == _APPROVAL).execute()
            return True

    def close(self) -> None:
        self._db.close()


_APPROVAL = "deletion_approval"
_LIST_OBJECTS = (
    "SELECT kind, name, uid, generation, digest, spec, source, labels, annotations, deleting"
    " FROM objects"
)
_GET_OBJECT = _LIST_OBJECTS + " WHERE kind = ? AND name = ?"
_GET_STATUS = "SELECT body FROM statuses WHERE kind = ? AND name = ?"
_PUT_STATUS = "INSERT OR REPLACE INTO statuses (kind, name, body) VALUES (?, ?, ?)"
_ADD_EVENT = (
    "INSERT INTO events (kind, name, type, reason, message, time) VALUES (?, ?, ?, ?, ?, ?)"
)


def _stored_object(row: Sequence[Any]) -> StoredObject:
    kind, name, uid, generation, digest, spec, source, labels, annotations, deleting = row
    return StoredObject(
        key=ObjectKey(kind, name),
        uid=uid,
        generation=generation,
        digest=digest,
        spec=json.loads(spec),
        source=source,
        labels=json.loads(labels),
        annotations=json.loads(annotations),
        deleting=bool(deleting),
    )


def _revision_row(
    key: ObjectKey,
    generation: int,
    digest: str,
    spec: str,
    source: str,
    stamp: str,
    commit: str | None,
) -> dict[str, Any]:
    return {
        "commit": commit,
        "kind": key.kind,
        "name": key.name,
        "generation": generation,
        "digest": digest,
        "spec": spec,
        "source": source,
        "time": stamp,
    }


def _status_to(status: Status) -> dict[str, Any]:
    return {
        "observedGeneration": status.observed_generation,
        "conditions": [
            {
                "type": c.type,
                "status": c.status,
                "reason": c.reason,
                "message": c.message,
                "lastTransitionTime": _time(c.last_transition_time),
            }
            for c in status.conditions
        ],
        "drift": [
            {"field": d.field, "desired": d.desired, "actual": d.actual} for d in status.drift
        ],
        "lastReconcileTime": _time(status.last_reconcile_time)
        if status.last_reconcile_time
        else None,
        "lastError": status.last_error,
        "retries": status.retries,
        "details": dict(status.details),
    }


def _status_from(body: Mapping[str, Any]) -> Status:
    return Status(
        observed_generation=body.get("observedGeneration", 0),
        conditions=tuple(
            Condition(
                type=c["type"],
                status=c["status"],
                reason=c["reason"],
                message=c["message"],
                last_transition_time=datetime.fromisoformat(c["lastTransitionTime"]),
            )
            for c in body.get("conditions", [])
        ),
        drift=tuple(Drift(d["field"], d["desired"], d["actual"]) for d in body.get("drift", [])),
        last_reconcile_time=_parse_time(body.get("lastReconcileTime")),
        last_error=body.get("lastError"),
        retries=body.get("retries", 0),
        details=body.get("details", {}),
    )
