"""What the systemd watchdog asks of the engine (a reconcile stuck for too long), and a
resync period changed while running (a configuration reload)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from kvmrec.engine import queue as queues
from kvmrec.engine import resync as resyncs
from kvmrec.engine import workers

Eventually = Callable[[Callable[[], bool]], None]


@pytest.fixture
def q() -> Iterator[queues.WorkQueue[str]]:
    wq: queues.WorkQueue[str] = queues.WorkQueue()
    yield wq
    wq.shutdown()


def test_a_reconcile_running_past_the_bound_is_stuck_until_it_returns(
    q: queues.WorkQueue[str], eventually: Eventually
) -> None:
    release = threading.Event()
    entered = threading.Event()
    done: list[str] = []

    def reconcile(key: str) -> workers.Result:
        if key == "hung":
            entered.set()
            release.wait(5)
        done.append(key)
        return workers.Result()

    pool = workers.Workers(q, reconcile, count=2)
    pool.start()
    try:
        q.add("hung")
        assert entered.wait(2)
        assert pool.stuck(after=60) == []  # busy, not stuck
        time.sleep(0.05)
        q.add("fine")  # the other worker still makes progress meanwhile
        eventually(lambda: done == ["fine"])

        stuck = pool.stuck(after=0.01)
        assert [key for key, _ in stuck] == ["hung"]
        assert stuck[0][1] >= 0.05
        assert pool.alive()

        release.set()
        eventually(lambda: pool.stuck(after=0.0) == [])
    finally:
        release.set()
        assert pool.stop(timeout=2)
    assert not pool.alive()


def test_an_idle_pool_is_not_stuck(q: queues.WorkQueue[str]) -> None:
    pool = workers.Workers(q, lambda _key: workers.Result(), count=2)
    pool.start()
    try:
        assert pool.stuck(after=0.0) == []
        assert pool.alive()
    finally:
        assert pool.stop(timeout=2)


def test_a_shorter_period_takes_effect_at_once_without_a_resync_of_its_own(
    q: queues.WorkQueue[str], eventually: Eventually
) -> None:
    listings: list[float] = []

    def keys() -> list[str]:
        listings.append(time.monotonic())
        return ["vm-a"]

    resync = resyncs.Resync(q, keys, period=3600.0, jitter=0.0)
    resync.start()
    try:
        resync.set_period(3600.0)
        time.sleep(0.1)
        assert listings == []  # re-arming the wait is not a resync
        assert resync.period == 3600.0

        changed = time.monotonic()
        resync.set_period(0.05)
        eventually(lambda: len(listings) >= 3)
        assert listings[0] - changed >= 0.04  # one new period after the change, not at once
    finally:
        assert resync.stop(timeout=2)


def test_a_trigger_still_resyncs_after_a_period_change(
    q: queues.WorkQueue[str], eventually: Eventually
) -> None:
    resync = resyncs.Resync(q, lambda: ["vm-a"], period=3600.0)
    resync.start()
    try:
        resync.set_period(1800.0)
        resync.trigger()
        eventually(lambda: len(q) == 1)
    finally:
        assert resync.stop(timeout=2)


def test_a_period_must_stay_positive(q: queues.WorkQueue[str]) -> None:
    resync = resyncs.Resync(q, list, period=60.0)
    with pytest.raises(ValueError, match="positive"):
        resync.set_period(0)
    assert resync.period == 60.0
