"""What is particular to the sqlite store: its file, its schema and migrations, WAL, and
what it makes of a path. Behaviour every store shares is in ``contract/``."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kvmrec.api.kinds import Manifest, ObjectKey
from kvmrec.store.base import StoreError
from kvmrec.store.records import SnapshotRecord, Status, StatusWrite
from kvmrec.store.sqlite import SqliteStore
from kvmrec.store.sqlite import schema as sqlite_schema
from kvmrec.store.sqlite.schema import MIGRATIONS

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
KEY = ObjectKey("Domain", "web")
SPEC = {"memory": "64Mi", "vcpus": 1, "runStrategy": "Always"}


def manifest(
    name: str = "web",
    spec: dict[str, object] | None = None,
    source: str = "web.yaml",
    **kwargs: object,
) -> Manifest:
    return Manifest("Domain", name, spec if spec is not None else dict(SPEC), source, 1, **kwargs)  # type: ignore[arg-type]


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "kvmrec.db"


@pytest.fixture
def store(path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(path)
    yield s
    s.close()


# -- the file and its schema ----------------------------------------------------------------


def test_schema_version_is_current_and_reopening_keeps_everything(path: Path) -> None:
    first = SqliteStore(path)
    assert first.schema_version() == len(MIGRATIONS) == 3
    first.apply(manifest(), at(0))
    first.record(KEY, Status(observed_generation=1), (), datetime.now(UTC))
    first.set_source_errors({"x.yaml": "bad"}, at(0))
    first.close()

    again = SqliteStore(path, create=False)
    try:
        assert again.schema_version() == 3
        assert [o.key for o in again.list()] == [KEY]
        assert again.get_status(KEY) == Status(observed_generation=1)
        assert [e.source for e in again.source_errors()] == ["x.yaml"]
        assert again.apply(manifest(), at(1)).changed is False
    finally:
        again.close()


def test_a_version_1_file_is_upgraded_in_place(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A state file written by a kvmrec that knew only the first migration (rows written
    # with plain SQL, as that kvmrec's own models would have)...
    monkeypatch.setattr(sqlite_schema, "MIGRATIONS", MIGRATIONS[:1])
    old = SqliteStore(path)
    assert old.schema_version() == 1
    old.close()
    monkeypatch.undo()
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO objects (kind, name, uid, generation, digest, spec, labels, "
            "annotations, source, deleting, created, updated) VALUES "
            "('Domain', 'web', 'u1', 1, 'd1', '{}', '{}', '{}', 'web.yaml', 0, 't', 't')"
        )
        db.execute(
            "INSERT INTO revisions (kind, name, generation, digest, spec, source, time) "
            "VALUES ('Domain', 'web', 1, 'd1', '{}', 'web.yaml', '2026-01-01T00:00:00+00:00')"
        )
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    db.close()
    assert "snapshots" not in tables

    # ...is left as it is by a read-only command (the running kvmrec may be the old one)...
    with pytest.raises(StoreError, match="schema version 1 is older than this kvmrec"):
        SqliteStore(path, read_only=True)

    # ...and is opened by this one: migrations 2 and 3 run, and nothing is lost.
    new = SqliteStore(path)
    try:
        assert new.schema_version() == 3
        assert [o.key for o in new.list()] == [KEY]
        assert [(r.generation, r.commit) for r in new.revisions(KEY)] == [(1, None)]
        record = SnapshotRecord("web", "kvmrec-nightly-1", "nightly", at(1), True, False)
        new.record_snapshot(record)
        assert new.snapshots(policy="nightly") == [record]
    finally:
        new.close()


def test_a_second_process_opening_a_new_file_waits_for_the_first_ones_schema(
    path: Path,
) -> None:
    """The service creates the file; ``kvmrec status`` finds it before its tables exist and
    opens it too. The second must wait for the first's migrations, not run them again."""
    path.parent.mkdir(parents=True)
    first = sqlite3.connect(path, isolation_level=None)
    first.execute("PRAGMA journal_mode = wal")
    first.execute("BEGIN IMMEDIATE")
    for number, step in enumerate(MIGRATIONS, 1):
        step(first.execute)
        first.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(number),)
        )
    outcome: list[object] = []

    def second_opens() -> None:
        try:
            outcome.append(SqliteStore(path).schema_version())
        except Exception as exc:  # the failure under test, reported by the assert below
            outcome.append(exc)

    opener = threading.Thread(target=second_opens)
    opener.start()
    opener.join(0.3)  # the second has read the version the first has not committed yet
    first.execute("COMMIT")
    first.close()
    opener.join(10)
    assert outcome == [len(MIGRATIONS)]


def test_a_newer_schema_version_is_refused(path: Path) -> None:
    SqliteStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.close()
    with pytest.raises(StoreError, match="schema version 99 is newer"):
        SqliteStore(path)


def test_create_false_on_a_missing_file_raises(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "state.db"
    with pytest.raises(StoreError, match="no state file"):
        SqliteStore(missing, create=False)
    assert not missing.exists()
    assert not missing.parent.exists()


def test_a_file_that_is_not_a_database_raises_store_error(tmp_path: Path) -> None:
    junk = tmp_path / "state.db"
    junk.write_bytes(b"this is not sqlite at all, just text " * 200)
    with pytest.raises(StoreError):
        SqliteStore(junk, create=False)


def test_journal_mode_is_wal(path: Path, store: SqliteStore) -> None:
    store.apply(manifest(), at(0))
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


def test_record_many_is_one_transaction_and_a_write_that_fails_fails_alone(
    store: SqliteStore,
) -> None:
    other = ObjectKey("Domain", "db")
    unstorable = object()  # no column takes it: sqlite refuses the statement
    writes = [
        StatusWrite(KEY, Status(observed_generation=1), [("Normal", "Started", "web")], at(1)),
        StatusWrite(other, Status(observed_generation=1), [("Normal", "Bad", unstorable)], at(1)),  # type: ignore[list-item]
        StatusWrite(ObjectKey("Domain", "c"), Status(observed_generation=2), [], at(1)),
    ]
    failures = store.record_many(writes)
    assert failures[0] is None and failures[2] is None
    assert isinstance(failures[1], StoreError)
    assert store.get_status(KEY) == Status(observed_generation=1)
    assert store.get_status(other) is None
    assert store.get_status(ObjectKey("Domain", "c")) == Status(observed_generation=2)
    assert [e.reason for e in store.events()] == ["Started"]
    [alone] = store.record_many([writes[1]])  # one that fails alone: told, not raised
    assert isinstance(alone, StoreError)

    commits = []
    store._db.connection().set_trace_callback(
        lambda sql: commits.append(sql) if sql == "COMMIT" else None
    )
    assert store.record_many([writes[0], writes[2]]) == [None, None]
    assert commits == ["COMMIT"]
