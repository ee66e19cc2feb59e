"""``recording.one_write``: a reconcile's status, events and history record in one write."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvmrec import store as stores
from kvmrec.api.kinds import Manifest, ObjectKey
from kvmrec.backends.errors import BackendError
from kvmrec.engine.clock import FakeClock
from kvmrec.engine.contract import Outcome, Result, Superseded
from kvmrec.engine.workers import PermanentError
from kvmrec.reconcilers import recording
from kvmrec.store.base import Store
from kvmrec.store.records import Status

KEY = ObjectKey("Domain", "web")
OTHER = ObjectKey("Network", "net")


class Writes:
    """A store that counts the writes it is asked for (each one is one transaction)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.writes: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if name in ("record", "record_reconcile", "add_event", "put_status"):
            self.writes.append(name)
        return attr


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Writes]:
    s = stores.open(tmp_path / "state.db")
    s.apply(Manifest("Domain", "web", {"memory": "64Mi"}, "web.yaml", 1), FakeClock().wall())
    yield Writes(s)
    s.close()


def ready(now: Any) -> Status:
    return Status(observed_generation=1).with_condition("Ready", "True", "Running", "", now)


def test_the_last_status_its_events_and_the_record_are_one_write(store: Writes) -> None:
    clock = FakeClock()
    with recording.one_write(store, KEY, clock):  # type: ignore[arg-type]
        now = clock.wall()
        recording.commit(store, KEY, None, ready(now), now, [("Normal", "Started", "up")])  # type: ignore[arg-type]
        assert store.store.get_status(KEY) is None  # held until the reconcile ends
    assert store.writes == ["record"]
    assert store.store.get_status(KEY) == ready(now)
    assert [e.reason for e in store.store.events(KEY)] == ["Started", "Running"]
    [record] = store.store.reconciles(KEY)
    assert (record.result, record.message, record.time) == ("ok", None, clock.wall())


def test_a_permanent_error_is_recorded_with_the_blocked_status(store: Writes) -> None:
    clock = FakeClock()
    blocked = recording.blocked(Status(), "Invalid", "no such disk", clock.wall())
    with pytest.raises(PermanentError), recording.one_write(store, KEY, clock):  # type: ignore[arg-type]
        recording.commit(store, KEY, None, blocked, clock.wall())  # type: ignore[arg-type]
        raise PermanentError("no such disk")
    assert store.writes == ["record"]
    assert store.store.get_status(KEY) == blocked
    [record] = store.store.reconciles(KEY)
    assert (record.result, record.message, record.duration) == ("permanent", "no such disk", 0.0)


def test_a_failure_recorded_in_status_goes_with_its_history(store: Writes) -> None:
    clock = FakeClock()
    failures = recording.failures_recorded(
        store,  # type: ignore[arg-type]
        KEY,
        None,
        clock.wall(),
        unavailable="LibvirtUnavailable",
    )
    with pytest.raises(BackendError), recording.one_write(store, KEY, clock), failures:  # type: ignore[arg-type]
        raise BackendError("define failed")
    assert store.writes == ["record"]
    status = store.store.get_status(KEY)
    assert status is not None and (status.last_error, status.retries) == ("define failed", 1)
    [record] = store.store.reconciles(KEY)
    assert (record.result, record.message) == ("error", "define failed")


def test_a_reconcile_without_a_status_write_is_still_in_history(store: Writes) -> None:
    clock = FakeClock()
    with recording.one_write(store, KEY, clock):  # type: ignore[arg-type]
        pass
    assert store.writes == ["record_reconcile"]
    assert [r.result for r in store.store.reconciles(KEY)] == ["ok"]
    assert store.store.get_status(KEY) is None


def test_a_second_status_write_sends_the_first_on_its_own(store: Writes) -> None:
    clock = FakeClock()
    first = Status().with_condition("Ready", "False", "Stopping", "", clock.wall())
    with recording.one_write(store, KEY, clock):  # type: ignore[arg-type]
        recording.commit(store, KEY, None, first, clock.wall())  # type: ignore[arg-type]
        clock.advance(1)
        recording.commit(store, KEY, first, ready(clock.wall()), clock.wall())  # type: ignore[arg-type]
        assert store.store.get_status(KEY) == first  # the first is stored, in order
    assert store.writes == ["record", "record"]
    assert store.store.get_status(KEY) == ready(clock.wall())
    assert [e.reason for e in store.store.events(KEY)] == ["Stopping", "Running"]
    assert len(store.store.reconciles(KEY)) == 1


def test_the_status_of_another_object_is_written_at_once(store: Writes) -> None:
    clock = FakeClock()
    with recording.one_write(store, KEY, clock):  # type: ignore[arg-type]
        recording.commit(store, OTHER, None, ready(clock.wall()), clock.wall())  # type: ignore[arg-type]
        assert store.store.get_status(OTHER) == ready(clock.wall())
    assert store.writes == ["record", "record_reconcile"]
    assert store.store.reconciles(OTHER) == []


def test_a_status_another_client_wrote_meanwhile_supersedes_the_reconcile(
    store: Writes, tmp_path: Path
) -> None:
    clock = FakeClock()
    assert store.store.get_status(KEY) is None  # what the reconcile read
    other = stores.open(tmp_path / "state.db")  # a command, writing meanwhile
    other.record(KEY, Status(retries=7), [], clock.wall())
    other.close()
    with pytest.raises(Superseded), recording.one_write(store, KEY, clock):  # type: ignore[arg-type]
        recording.commit(store, KEY, None, ready(clock.wall()), clock.wall())  # type: ignore[arg-type]
    # Not written over; and this read is what the next reconcile starts from.
    assert store.store.get_status(KEY) == Status(retries=7)

    # The same in a batch: the write alone fails, and its reconcile is superseded.
    deferred: recording.Deferred = []
    with recording.one_write(store, KEY, clock, deferred=deferred):  # type: ignore[arg-type]
        recording.commit(store, KEY, None, ready(clock.wall()), clock.wall())  # type: ignore[arg-type]
    other = stores.open(tmp_path / "state.db")
    other.record(KEY, Status(retries=8), [], clock.wall())
    other.close()
    outcome = Outcome(result=Result())
    recording.store_deferred(store, deferred, {KEY: outcome})  # type: ignore[arg-type]
    assert outcome.result is None and isinstance(outcome.error, Superseded)
    assert store.store.get_status(KEY) == Status(retries=8)
