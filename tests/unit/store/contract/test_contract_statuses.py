"""Store contract: statuses, events, and the write a reconcile ends with."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from freezegun import freeze_time
from store_contract import KEY, SPEC, Capabilities, Opener, at, manifest

from kvmrec.api.kinds import ObjectKey
from kvmrec.store.base import StatusConflict, Store, StoreError
from kvmrec.store.convergence import Convergence, convergence_of
from kvmrec.store.records import (
    Condition,
    Drift,
    ReconcileRecord,
    Status,
    StatusWrite,
)


def test_status_round_trips_conditions_drift_and_times(store: Store) -> None:
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
    store.record(KEY, status, (), datetime.now(UTC))
    back = store.get_status(KEY)
    assert back == status
    assert back is not None
    assert all(c.last_transition_time.tzinfo is not None for c in back.conditions)
    assert back.conditions[1].last_transition_time == at(2)
    assert store.statuses() == {KEY: status}

    store.record(KEY, Status(), (), datetime.now(UTC))  # replaced, not added
    assert store.get_status(KEY) == Status()
    assert len(store.statuses()) == 1


def test_status_times_come_from_freezegun_clock(store: Store) -> None:
    with freeze_time("2024-06-01 08:30:00"):
        now = datetime.now(UTC)
        store.record(
            KEY, Status().with_condition("Ready", "True", "Running", "", now), (), datetime.now(UTC)
        )
        store.add_event(KEY, "Normal", "Running", "it runs", now)
    cond = store.get_status(KEY).condition("Ready")  # type: ignore[union-attr]
    assert cond is not None
    assert cond.last_transition_time == datetime(2024, 6, 1, 8, 30, tzinfo=UTC)
    assert store.events(KEY)[0].time == datetime(2024, 6, 1, 8, 30, tzinfo=UTC)


def test_a_status_is_independent_of_its_object(store: Store) -> None:
    # a status does not need the object (a reconciler may race with remove()).
    store.record(KEY, replace(Status(), retries=1), (), datetime.now(UTC))
    assert store.get(KEY) is None
    assert store.get_status(KEY) == Status(retries=1)


def test_events_are_in_order_filtered_and_limited(store: Store) -> None:
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
    store: Store,
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


def test_record_stores_status_events_and_the_reconcile_together(store: Store) -> None:
    store.apply(manifest(), at(0))
    status = Status(observed_generation=1).with_condition("Ready", "True", "Running", "", at(1))
    done = ReconcileRecord(KEY, at(1), 0.25, "ok")
    store.record(
        KEY,
        status,
        [("Normal", "Created", "defined web"), ("Normal", "Started", "started web")],
        at(1),
        reconcile=done,
    )
    assert store.get_status(KEY) == status
    assert [(e.type, e.reason, e.message, e.time, e.key) for e in store.events(KEY)] == [
        ("Normal", "Created", "defined web", at(1), KEY),
        ("Normal", "Started", "started web", at(1), KEY),
    ]
    assert store.reconciles(KEY) == [done]

    store.record(KEY, Status(observed_generation=2), [], at(2))  # no events, no record
    assert store.get_status(KEY) == Status(observed_generation=2)
    assert len(store.events(KEY)) == 2
    assert store.reconciles(KEY) == [done]


def test_record_many_stores_each_write_as_record_would(store: Store) -> None:
    other = ObjectKey("Domain", "db")
    store.apply(manifest(), at(0))
    store.apply(manifest("db", source="db.yaml"), at(0))
    ready = Status(observed_generation=1).with_condition("Ready", "True", "Running", "", at(1))
    done = ReconcileRecord(KEY, at(1), 0.25, "ok")
    failed = ReconcileRecord(other, at(1), 0.0, "error", "boom")
    failures = store.record_many(
        [
            StatusWrite(KEY, ready, [("Normal", "Started", "started web")], at(1), done),
            StatusWrite(other, None, [], at(1), failed),  # a record alone
            StatusWrite(other, Status(observed_generation=1), [], at(2)),
        ]
    )
    assert list(failures) == [None, None, None]
    assert store.get_status(KEY) == ready
    assert [(e.reason, e.message) for e in store.events(KEY)] == [("Started", "started web")]
    assert store.reconciles(KEY) == [done]
    assert store.get_status(other) == Status(observed_generation=1)
    assert store.events(other) == []
    assert store.reconciles(other) == [failed]
    assert store.record_many([]) == []


def test_a_record_that_fails_writes_nothing(store: Store) -> None:
    store.record(KEY, Status(observed_generation=1), (), datetime.now(UTC))
    unstorable = object()  # neither a column nor JSON
    with pytest.raises((StoreError, TypeError, ValueError)):
        store.record(
            KEY,
            Status(observed_generation=2),
            [("Normal", "Good", "fine"), ("Normal", "Bad", unstorable)],  # type: ignore[list-item]
            at(1),
            reconcile=ReconcileRecord(KEY, at(1), 0.1, "ok"),
        )
    assert store.get_status(KEY) == Status(observed_generation=1)
    assert store.events(KEY) == []
    assert store.reconciles(KEY) == []


def test_get_with_status_reads_both(store: Store) -> None:
    assert store.get_with_status(KEY) == (None, None)
    store.apply(manifest(), at(0))
    obj, status = store.get_with_status(KEY)
    assert (obj, status) == (store.get(KEY), None)
    store.record(KEY, Status(observed_generation=1, retries=2), (), datetime.now(UTC))
    assert store.get_with_status(KEY) == (store.get(KEY), Status(observed_generation=1, retries=2))
    store.mark_deleting(KEY, at(1))
    store.remove(KEY)
    assert store.get_with_status(KEY) == (None, None)
    # A status without its object (a reconcile that raced a remove) is still read.
    store.record(KEY, Status(retries=1), (), datetime.now(UTC))
    assert store.get_with_status(KEY) == (None, Status(retries=1))


def test_get_many_with_status_reads_what_each_read_alone_would(store: Store) -> None:
    other, status_only, missing = (ObjectKey("Domain", n) for n in ("db", "orphan", "none"))
    store.apply(manifest(), at(0))
    store.apply(manifest("db"), at(0))
    store.record(other, Status(observed_generation=1, retries=2), (), at(1))
    store.record(status_only, Status(retries=1), (), at(1))
    keys = [KEY, other, status_only, missing]
    alone = {key: store.get_with_status(key) for key in keys}
    assert store.get_many_with_status(keys) == alone
    assert alone[other] == (store.get(other), Status(observed_generation=1, retries=2))
    assert alone[status_only] == (None, Status(retries=1)) and alone[missing] == (None, None)
    assert store.get_many_with_status([]) == {}
    # More keys than one request may read: each still read.
    many = [ObjectKey("Domain", f"m{i}") for i in range(150)]
    for key in many[::7]:
        store.record(key, Status(retries=3), (), at(2))
    found = store.get_many_with_status(many)
    assert list(found) == many
    assert [k for k, (_, status) in found.items() if status == Status(retries=3)] == many[::7]


def test_a_batch_read_is_what_a_status_write_compares_with(store: Store, opener: Opener) -> None:
    other = opener()
    try:
        store.apply(manifest(), at(0))
        store.get_many_with_status([KEY])  # read: none yet
        other.record(KEY, Status(retries=1), (), at(1))  # ... then another client's
        with pytest.raises(StatusConflict):
            store.record(KEY, Status(retries=2), (), at(2))
        store.get_many_with_status([KEY])  # read again: the write goes
        store.record(KEY, Status(retries=3), (), at(3))
        assert other.get_status(KEY) == Status(retries=3)
    finally:
        other.close()


def test_convergence_tells_each_object_s_generation_and_what_its_status_says(
    store: Store,
) -> None:
    other = ObjectKey("Domain", "db")
    store.apply(manifest(), at(0))
    store.apply(manifest("db"), at(0))
    store.apply(manifest("db", spec={**SPEC, "vcpus": 2}), at(1))  # generation 2
    assert store.convergence() == {
        KEY: Convergence(1, False, None, False),
        other: Convergence(2, False, None, False),
    }
    ready = (
        Status(observed_generation=1)
        .with_condition("Ready", "True", "Running", "", at(2))
        .with_condition("Synced", "True", "Synced", "", at(2))
    )
    store.record(KEY, ready, (), at(2))
    drifted = ready.with_condition("Synced", "False", "Drifted", "spec.vcpus", at(3))
    store.record(other, drifted, (), at(3))
    found = store.convergence()
    assert found[KEY] == Convergence(1, False, 1, True) and found[KEY].current
    assert found[other] == Convergence(2, False, 1, False) and not found[other].current
    # Only stored objects: a status alone (its object removed) is no part of it.
    store.mark_deleting(KEY, at(4))
    store.mark_deleting(other, at(4))
    store.remove(other)
    assert store.convergence() == {KEY: Convergence(1, True, 1, True)}
    assert not store.convergence()[KEY].current
    assert store.convergence() == convergence_of(store.list(), store.statuses())


def test_events_with_and_without_an_object_and_a_limit_past_the_end(store: Store) -> None:
    assert store.events() == []
    store.add_event(None, "Warning", "Guard", "held back", at(0))
    store.add_event(KEY, "Normal", "Created", "", at(1))
    assert [(e.key, e.reason) for e in store.events(limit=1000)] == [
        (None, "Guard"),
        (KEY, "Created"),
    ]
    seqs = [e.seq for e in store.events()]
    assert seqs == sorted(seqs) and len(set(seqs)) == 2 and seqs[0] > 0
    assert store.events(ObjectKey("Domain", "other")) == []


def test_a_reconcile_that_changed_nothing_is_written_only_where_declared(
    store: Store, capabilities: Capabilities
) -> None:
    store.apply(manifest(), at(0))
    first = Status(observed_generation=1, last_reconcile_time=at(1)).with_condition(
        "Ready", "True", "Running", "", at(1)
    )
    store.record(KEY, first, [], at(1), reconcile=ReconcileRecord(KEY, at(1), 0.1, "ok"))
    again = replace(first, last_reconcile_time=at(2))
    store.record(KEY, again, [], at(2), reconcile=ReconcileRecord(KEY, at(2), 0.1, "ok"))
    if capabilities.writes_quiet_reconciles:
        assert store.get_status(KEY) == again
        assert [r.time for r in store.reconciles(KEY)] == [at(1), at(2)]
    else:  # nothing but the time moved: nothing is written
        assert store.get_status(KEY) == first
        assert [r.time for r in store.reconciles(KEY)] == [at(1)]

    # A failed reconcile, an event, or a status that changed is always written.
    failed = replace(first, last_reconcile_time=at(3))
    store.record(KEY, failed, [], at(3), reconcile=ReconcileRecord(KEY, at(3), 0.0, "error", "x"))
    assert store.get_status(KEY) == failed
    assert store.reconciles(KEY)[-1].result == "error"
    told = replace(first, last_reconcile_time=at(4))
    store.record(KEY, told, [("Normal", "Checked", "")], at(4))
    assert store.get_status(KEY) == told
    assert [e.reason for e in store.events(KEY)] == ["Checked"]
    moved = replace(told, retries=1)
    store.record(KEY, moved, [], at(4))
    assert store.get_status(KEY) == moved


def test_host_statuses_name_the_host_of_each_status(
    store: Store, capabilities: Capabilities
) -> None:
    other = ObjectKey("Domain", "db")
    assert store.host_statuses() == []
    store.record(KEY, Status(observed_generation=1), (), datetime.now(UTC))
    store.record(other, Status(observed_generation=2), (), datetime.now(UTC))
    host = capabilities.host
    assert store.host_statuses() == [
        (other, host, Status(observed_generation=2)),
        (KEY, host, Status(observed_generation=1)),
    ]
    assert store.host_statuses(KEY) == [(KEY, host, Status(observed_generation=1))]
    assert store.host_statuses(ObjectKey("Domain", "none")) == []
    store.mark_deleting(KEY, at(1))
    store.remove(KEY)
    assert store.host_statuses() == [(other, host, Status(observed_generation=2))]


def test_a_status_written_by_another_client_since_it_was_read_refuses_the_write(
    store: Store, opener: Opener
) -> None:
    other = opener()
    try:
        store.apply(manifest(), at(0))
        assert store.get_status(KEY) is None  # read: none yet
        other.record(KEY, Status(retries=1), (), at(1))  # ... then another client's
        record = ReconcileRecord(KEY, at(2), 0.5, "ok")
        with pytest.raises(StatusConflict):
            store.record(
                KEY, Status(retries=2), [("Normal", "Started", "up")], at(2), reconcile=record
            )
        assert other.get_status(KEY) == Status(retries=1)  # nothing written over it
        # ... but what the reconcile did is told all the same.
        assert [e.reason for e in other.events(KEY)] == ["Started"]
        assert other.reconciles(KEY) == [record]

        _, seen = store.get_with_status(KEY)  # read again: the write goes
        assert seen == Status(retries=1)
        store.record(KEY, Status(retries=3), (), at(3))
        other.get_status(KEY)
        store.record(KEY, Status(retries=4), (), at(4))  # its own write is what it has seen
        assert other.get_status(KEY) == Status(retries=4)
        other.record(KEY, Status(retries=5), (), at(5))
        [refused] = store.record_many([StatusWrite(KEY, Status(retries=6), (), at(6))])
        assert isinstance(refused, StatusConflict)
        assert other.get_status(KEY) == Status(retries=5)
    finally:
        other.close()
