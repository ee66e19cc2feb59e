"""The sqlite store: generations and revisions, status, events, source errors, schema, threads."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from freezegun import freeze_time

from kvmrec.api.kinds import Manifest, ObjectKey
from kvmrec.store.sqlite import schema as sqlite_schema
from kvmrec.store.base import StoreError
from kvmrec.store.records import Condition, Drift, SnapshotRecord, Status
from kvmrec.store.sqlite import SqliteStore
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


# -- objects and revisions -------------------------------------------------------------------


def test_apply_creates_generation_1_and_a_revision(store: SqliteStore) -> None:
    m = manifest(labels={"tier": "web"}, annotations={"note": "x"})
    result = store.apply(m, at(0))
    assert (result.generation, result.changed, result.created) == (1, True, True)

    obj = store.get(KEY)
    assert obj is not None
    assert (obj.generation, obj.digest, obj.source) == (1, m.digest, "web.yaml")
    assert obj.deleting is False
    assert dict(obj.spec) == SPEC
    assert obj.labels == {"tier": "web"}
    assert obj.annotations == {"note": "x"}
    assert obj.uid

    [rev] = store.revisions(KEY)
    assert (rev.key, rev.generation, rev.digest, rev.source, rev.time) == (
        KEY,
        1,
        m.digest,
        "web.yaml",
        at(0),
    )
    assert dict(rev.spec) == SPEC


def test_same_manifest_again_is_unchanged_and_adds_no_revision(store: SqliteStore) -> None:
    store.apply(manifest(), at(0))
    before = store.get(KEY)
    # The same spec, written with its keys in another order.
    reordered = {"runStrategy": "Always", "vcpus": 1, "memory": "64Mi"}
    again = store.apply(manifest(spec=reordered), at(5))
    assert (again.generation, again.changed, again.created) == (1, False, False)
    assert len(store.revisions(KEY)) == 1
    assert store.get(KEY) == before


def test_changed_spec_is_generation_2_with_a_second_revision(store: SqliteStore) -> None:
    store.apply(manifest(), at(0))
    uid = store.get(KEY).uid  # type: ignore[union-attr]
    changed = manifest(spec=SPEC | {"vcpus": 2}, source="moved/web.yaml")
    result = store.apply(changed, at(3))
    assert (result.generation, result.changed, result.created) == (2, True, False)

    obj = store.get(KEY)
    assert obj is not None
    assert (obj.generation, obj.digest, obj.uid, obj.spec["vcpus"]) == (2, changed.digest, uid, 2)

    first, second = store.revisions(KEY)
    assert (first.generation, first.spec["vcpus"], first.source) == (1, 1, "web.yaml")
    assert (second.generation, second.digest, second.source, second.time) == (
        2,
        changed.digest,
        "moved/web.yaml",
        at(3),
    )
    assert second.digest != first.digest

    # Back to the first spec: a third generation, not a return to the first.
    assert store.apply(manifest(), at(4)).generation == 3
    assert [r.generation for r in store.revisions(KEY)] == [1, 2, 3]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"labels": {"tier": "db"}}, id="labels"),
        pytest.param({"annotations": {"kvmrec.io/adopt": "true"}}, id="annotations"),
        pytest.param({"source": "other.yaml"}, id="source"),
    ],
)
def test_metadata_only_change_is_changed_without_a_new_generation(
    store: SqliteStore, change: dict[str, object]
) -> None:
    store.apply(manifest(labels={"tier": "web"}), at(0))
    result = store.apply(manifest(**({"labels": {"tier": "web"}} | change)), at(1))  # type: ignore[arg-type]
    assert (result.generation, result.changed, result.created) == (1, True, False)
    assert len(store.revisions(KEY)) == 1
    obj = store.get(KEY)
    assert obj is not None
    for field, value in change.items():
        assert getattr(obj, field) == value


def test_mark_deleting_and_apply_undoes_it(store: SqliteStore) -> None:
    assert store.mark_deleting(KEY, at(0)) is False  # unknown
    store.apply(manifest(), at(0))
    assert store.mark_deleting(KEY, at(1)) is True
    assert store.get(KEY).deleting is True  # type: ignore[union-attr]
    assert store.mark_deleting(KEY, at(2)) is False  # already so

    result = store.apply(manifest(), at(3))
    assert (result.generation, result.changed, result.created) == (1, True, False)
    assert store.get(KEY).deleting is False  # type: ignore[union-attr]
    assert len(store.revisions(KEY)) == 1


def test_remove_drops_object_and_status_but_keeps_events(store: SqliteStore) -> None:
    store.apply(manifest(), at(0))
    store.apply(manifest("db"), at(0))
    store.put_status(KEY, Status(observed_generation=1))
    store.put_status(ObjectKey("Domain", "db"), Status(observed_generation=1))
    store.add_event(KEY, "Normal", "Created", "defined domain web", at(1))
    store.remove(KEY)
    assert store.get(KEY) is None
    assert store.get_status(KEY) is None
    assert [o.key.name for o in store.list()] == ["db"]
    assert list(store.statuses()) == [ObjectKey("Domain", "db")]
    [event] = store.events(KEY)
    assert (event.reason, event.message, event.time) == ("Created", "defined domain web", at(1))
    store.remove(KEY)  # removing twice is harmless


def test_keys_follow_apply_and_remove(store: SqliteStore) -> None:
    assert store.keys() == []
    store.apply(manifest("b"), at(0))
    assert store.keys() == [ObjectKey("Domain", "b")]  # the cache is filled now
    store.apply(manifest("a"), at(0))
    store.mark_deleting(ObjectKey("Domain", "b"), at(1))
    assert store.keys() == [ObjectKey("Domain", "a"), ObjectKey("Domain", "b")]
    store.remove(ObjectKey("Domain", "b"))
    assert store.keys() == [ObjectKey("Domain", "a")]


def test_list_is_sorted_and_filters_by_kind(store: SqliteStore) -> None:
    for name in ("c", "a", "b"):
        store.apply(manifest(name), at(0))
    assert [o.key.name for o in store.list()] == ["a", "b", "c"]
    assert [o.key.name for o in store.list("Domain")] == ["a", "b", "c"]
    assert store.list("Network") == []


# -- status ----------------------------------------------------------------------------------


def test_status_round_trips_conditions_drift_and_times(store: SqliteStore) -> None:
    plus_two = timezone(timedelta(hours=2))
    status = Status(
        observed_generation=3,
        conditions=(
            Condition("Ready", "True", "Running", "", at(1)),
            Condition("Synced", "False", "Drifted", "spec.vcpus", at(2).astimezone(plus_two)),
        ),
        drift=(
            Drift("spec.vcpus", 2, 1),
            Drift("spec.autostart", True, False),
            Drift("spec.memory", "64Mi", "32Mi"),
            Drift("spec.disks", [{"path": "/a"}], []),
        ),
        last_reconcile_time=at(3),
        last_error="boom",
        retries=4,
        details={"state": "running", "uuid": "u-1"},
    )
    store.put_status(KEY, status)
    back = store.get_status(KEY)
    assert back == status
    assert back is not None
    assert all(c.last_transition_time.tzinfo is not None for c in back.conditions)
    assert back.conditions[1].last_transition_time == at(2)
    assert store.statuses() == {KEY: status}

    store.put_status(KEY, Status())  # replaced, not added
    assert store.get_status(KEY) == Status()
    assert len(store.statuses()) == 1


def test_status_times_come_from_freezegun_clock(store: SqliteStore) -> None:
    with freeze_time("2024-06-01 08:30:00"):
        now = datetime.now(UTC)
        store.put_status(KEY, Status().with_condition("Ready", "True", "Running", "", now))
        store.add_event(KEY, "Normal", "Running", "it runs", now)
    cond = store.get_status(KEY).condition("Ready")  # type: ignore[union-attr]
    assert cond is not None
    assert cond.last_transition_time == datetime(2024, 6, 1, 8, 30, tzinfo=UTC)
    assert store.events(KEY)[0].time == datetime(2024, 6, 1, 8, 30, tzinfo=UTC)


def test_with_condition_moves_transition_time_only_when_status_changes() -> None:
    status = Status().with_condition("Ready", "False", "NotRunning", "shut off", at(0))
    same = status.with_condition("Ready", "False", "Crashed", "crashed", at(5))
    ready = same.condition("Ready")
    assert ready is not None
    assert (ready.reason, ready.message) == ("Crashed", "crashed")
    assert ready.last_transition_time == at(0)

    flipped = same.with_condition("Ready", "True", "Running", "", at(9)).condition("Ready")
    assert flipped is not None
    assert (flipped.status, flipped.last_transition_time) == ("True", at(9))


def test_with_condition_orders_conditions_and_without_removes() -> None:
    status = (
        Status()
        .with_condition("Degraded", "False", "Ok", "", at(0))
        .with_condition("Custom", "True", "Yes", "", at(0))
        .with_condition("Synced", "True", "Synced", "", at(0))
        .with_condition("RestartRequired", "True", "DefinitionChanged", "", at(0))
        .with_condition("Ready", "True", "Running", "", at(0))
    )
    assert [c.type for c in status.conditions] == [
        "Ready",
        "Synced",
        "RestartRequired",
        "Degraded",
        "Custom",
    ]
    assert status.is_true("RestartRequired")
    gone = status.without_condition("RestartRequired")
    assert gone.condition("RestartRequired") is None
    assert not gone.is_true("RestartRequired")
    assert len(gone.conditions) == 4


# -- events and source errors ----------------------------------------------------------------


def test_events_are_in_order_filtered_and_limited(store: SqliteStore) -> None:
    other = ObjectKey("Domain", "db")
    for i in range(5):
        store.add_event(KEY, "Normal", f"R{i}", f"m{i}", at(i))
    store.add_event(other, "Warning", "Conflict", "not ours", at(9))
    store.add_event(None, "Warning", "Guard", "refused", at(10))

    assert [e.reason for e in store.events(KEY)] == ["R0", "R1", "R2", "R3", "R4"]
    assert [e.reason for e in store.events(KEY, limit=2)] == ["R3", "R4"]
    everything = store.events()
    assert [e.reason for e in everything][-2:] == ["Conflict", "Guard"]
    assert everything[-1].key is None
    assert (everything[-2].key, everything[-2].type) == (other, "Warning")


def test_events_after_a_seq_are_the_ones_recorded_later_oldest_first(
    store: SqliteStore,
) -> None:
    other = ObjectKey("Domain", "db")
    for i in range(3):
        store.add_event(KEY, "Normal", f"R{i}", f"m{i}", at(i))
    cursor = store.events()[-1].seq
    store.add_event(other, "Normal", "Other", "", at(5))
    store.add_event(KEY, "Normal", "R3", "", at(6))
    store.add_event(KEY, "Normal", "R4", "", at(7))

    assert cursor > 0
    assert [e.reason for e in store.events(after=cursor)] == ["Other", "R3", "R4"]
    assert [e.reason for e in store.events(KEY, after=cursor)] == ["R3", "R4"]
    assert [e.reason for e in store.events(after=cursor, limit=1)] == ["Other"]
    assert store.events(after=store.events()[-1].seq) == []


def test_the_change_counter_moves_when_another_connection_writes(
    store: SqliteStore, path: Path
) -> None:
    reader = SqliteStore(path, create=False)
    try:
        before = reader.change_counter()
        assert reader.change_counter() == before  # reading it changes nothing
        store.add_event(KEY, "Normal", "Started", "", at(0))
        after = reader.change_counter()
        assert after != before
        store.put_status(KEY, Status(observed_generation=1))
        assert reader.change_counter() != after
    finally:
        reader.close()


def test_set_source_errors_replace_clear_and_keep_time_of_unchanged(store: SqliteStore) -> None:
    store.set_source_errors({"a.yaml": "line 3: bad", "b.yaml": "line 1: worse"}, at(0))
    assert [(e.source, e.message, e.time) for e in store.source_errors()] == [
        ("a.yaml", "line 3: bad", at(0)),
        ("b.yaml", "line 1: worse", at(0)),
    ]

    # The same mapping again: nothing moves.
    store.set_source_errors({"b.yaml": "line 1: worse", "a.yaml": "line 3: bad"}, at(1))
    assert [e.time for e in store.source_errors()] == [at(0), at(0)]

    # Replaced: a.yaml unchanged keeps its time, b.yaml is gone, c.yaml is new, and a
    # changed message is a new error with a new time.
    store.set_source_errors({"a.yaml": "line 3: bad", "c.yaml": "line 2: new"}, at(2))
    assert [(e.source, e.time) for e in store.source_errors()] == [
        ("a.yaml", at(0)),
        ("c.yaml", at(2)),
    ]
    store.set_source_errors({"a.yaml": "line 4: different", "c.yaml": "line 2: new"}, at(3))
    assert [(e.source, e.message, e.time) for e in store.source_errors()] == [
        ("a.yaml", "line 4: different", at(3)),
        ("c.yaml", "line 2: new", at(2)),
    ]

    store.set_source_errors({}, at(4))
    assert store.source_errors() == []


# -- the file, its schema, and threads -------------------------------------------------------


def test_schema_version_is_current_and_reopening_keeps_everything(path: Path) -> None:
    first = SqliteStore(path)
    assert first.schema_version() == len(MIGRATIONS) == 3
    first.apply(manifest(), at(0))
    first.put_status(KEY, Status(observed_generation=1))
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

    # ...is opened by this one: migrations 2 and 3 run, and nothing is lost.
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


def test_concurrent_writers_lose_nothing(store: SqliteStore) -> None:
    threads, per_thread = 8, 15
    barrier = threading.Barrier(threads)
    failures: list[BaseException] = []

    def work(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                key = ObjectKey("Domain", f"t{t}-o{i}")
                store.apply(manifest(key.name, spec=SPEC | {"vcpus": t + 1}), at(i))
                store.put_status(key, Status(observed_generation=1, retries=i))
                store.add_event(key, "Normal", "Created", f"{t}/{i}", at(i))
                # And a shared object everybody updates.
                shared_spec = SPEC | {"vcpus": t * per_thread + i + 1}
                store.apply(manifest("shared", spec=shared_spec), at(i))
                store.add_event(KEY, "Normal", "Touched", f"{t}/{i}", at(i))
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=30)
    assert not failures, failures
    assert not any(w.is_alive() for w in workers)

    names = {o.key.name for o in store.list()}
    assert len(names) == threads * per_thread + 1
    stored_keys = store.keys()
    assert {k.name for k in stored_keys} == names
    statuses = store.statuses()
    assert len(statuses) == threads * per_thread
    for t in range(threads):
        for i in range(per_thread):
            key = ObjectKey("Domain", f"t{t}-o{i}")
            assert statuses[key].retries == i
            assert store.get(key).spec["vcpus"] == t + 1  # type: ignore[union-attr]
    assert len(store.events(limit=10_000)) == 2 * threads * per_thread
    assert len(store.events(KEY, limit=10_000)) == threads * per_thread
    # Every update of the shared object was a new spec: one generation and revision each.
    shared = ObjectKey("Domain", "shared")
    total = threads * per_thread
    assert store.get(shared).generation == total  # type: ignore[union-attr]
    assert [r.generation for r in store.revisions(shared)] == list(range(1, total + 1))


def test_a_status_is_independent_of_its_object(store: SqliteStore) -> None:
    # put_status does not need the object (a reconciler may race with remove()).
    store.put_status(KEY, replace(Status(), retries=1))
    assert store.get(KEY) is None
    assert store.get_status(KEY) == Status(retries=1)
