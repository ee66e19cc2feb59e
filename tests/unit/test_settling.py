"""Whether the service has settled (``run --once``), from the store's convergence."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kvmrec import settling
from kvmrec.api.kinds import Manifest, ObjectKey
from kvmrec.engine import backoff as backoffs
from kvmrec.engine import clock as clocks
from kvmrec.engine.queue import WorkQueue
from kvmrec.store.records import Status
from kvmrec.store.sqlite import SqliteStore

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
WEB, DB = ObjectKey("Domain", "web"), ObjectKey("Domain", "db")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "state.db")
    for name in ("web", "db"):
        opened.apply(Manifest("Domain", name, {"memory": "64Mi"}, f"{name}.yaml", 1), NOW)
    yield opened
    opened.close()


@pytest.fixture
def queue() -> Iterator[WorkQueue[ObjectKey]]:
    made: WorkQueue[ObjectKey] = WorkQueue(
        clock=clocks.FakeClock(), backoff=backoffs.Backoff(backoffs.BackoffSettings(jitter=0.0))
    )
    yield made
    made.shutdown()


def status(generation: int, *, ready: bool, synced: bool = True) -> Status:
    word = {True: "True", False: "False"}
    return (
        Status(observed_generation=generation)
        .with_condition("Ready", word[ready], "Running" if ready else "NotRunning", "", NOW)
        .with_condition("Synced", word[synced], "Synced" if synced else "Drifted", "", NOW)
    )


def test_settled_once_every_object_is_ready_and_synced_at_its_generation(
    store: SqliteStore, queue: WorkQueue[ObjectKey]
) -> None:
    assert not settling.settled(queue, store)  # no status yet
    assert settling.converged_count(store) == (0, 2)
    store.record(WEB, status(1, ready=True), (), NOW)
    assert not settling.settled(queue, store)
    store.record(DB, status(1, ready=True), (), NOW)
    assert settling.settled(queue, store)
    assert settling.converged_count(store) == (2, 2)
    queue.add(WEB)  # work to do: not settled, whatever the statuses say
    assert not settling.settled(queue, store)


def test_a_failure_settles_unless_a_retry_is_pending(
    store: SqliteStore, queue: WorkQueue[ObjectKey]
) -> None:
    store.record(WEB, status(1, ready=True), (), NOW)
    store.record(DB, status(1, ready=False), (), NOW)  # failed for good on generation 1
    assert settling.settled(queue, store)
    assert settling.converged_count(store) == (1, 2)
    queue.add_after(DB, 5.0)  # ... unless it is to be tried again
    assert not settling.settled(queue, store)


def test_an_older_generation_settles_only_without_retries_and_a_deletion_never(
    store: SqliteStore, queue: WorkQueue[ObjectKey]
) -> None:
    store.record(WEB, status(1, ready=True), (), NOW)
    store.apply(Manifest("Domain", "db", {"memory": "128Mi"}, "db.yaml", 1), NOW)
    store.record(DB, status(1, ready=True), (), NOW)  # generation 2 refused for good
    assert settling.settled(queue, store)
    assert settling.converged_count(store) == (1, 2)
    queue.add_after(DB, 5.0)
    assert not settling.settled(queue, store)
    store.mark_deleting(WEB, NOW)
    assert not settling.settled(WorkQueue(clock=clocks.FakeClock()), store)
