"""Resync: re-adds every key periodically and on trigger, idles on an Event, stops at once."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import pytest

from kvmrec.engine import queue as queues
from kvmrec.engine import resync as resyncs

Eventually = Callable[[Callable[[], bool]], None]
Factory = Callable[..., resyncs.Resync[str]]


@pytest.fixture
def q() -> Iterator[queues.WorkQueue[str]]:
    wq: queues.WorkQueue[str] = queues.WorkQueue()
    yield wq
    wq.shutdown()


@pytest.fixture
def make_resync(q: queues.WorkQueue[str]) -> Iterator[Factory]:
    started: list[resyncs.Resync[str]] = []

    def make(
        keys: Callable[[], Iterable[str]], *, period: float = 300.0, jitter: float = 0.1
    ) -> resyncs.Resync[str]:
        resync = resyncs.Resync(q, keys, period=period, jitter=jitter)
        resync.start()
        started.append(resync)
        return resync

    yield make
    for resync in started:
        assert resync.stop(timeout=2)


def test_trigger_adds_every_key_at_once(
    q: queues.WorkQueue[str], make_resync: Factory, eventually: Eventually
) -> None:
    resync = make_resync(lambda: ["vm-a", "vm-b", "net-default"])

    resync.trigger()

    eventually(lambda: len(q) == 3)
    assert [q.get(timeout=0) for _ in range(3)] == ["vm-a", "vm-b", "net-default"]


def test_resyncs_repeat_every_period(make_resync: Factory, eventually: Eventually) -> None:
    listings = 0

    def keys() -> list[str]:
        nonlocal listings
        listings += 1
        return ["vm-a"]

    make_resync(keys, period=0.01, jitter=0.0)

    eventually(lambda: listings >= 3)


def test_nothing_happens_before_the_first_period(
    q: queues.WorkQueue[str], make_resync: Factory
) -> None:
    make_resync(lambda: ["vm-a"], period=300.0)
    time.sleep(0.02)
    assert len(q) == 0


def test_stop_interrupts_a_long_wait(make_resync: Factory) -> None:
    resync = make_resync(lambda: ["vm-a"], period=300.0)
    start = time.monotonic()

    assert resync.stop(timeout=2)

    assert time.monotonic() - start < 0.5


def test_a_failing_listing_is_logged_and_the_next_one_still_runs(
    q: queues.WorkQueue[str],
    make_resync: Factory,
    eventually: Eventually,
    caplog: pytest.LogCaptureFixture,
) -> None:
    listings = 0
    listed = threading.Event()

    def keys() -> Iterator[str]:
        nonlocal listings
        listings += 1
        listed.set()
        yield "vm-a"
        if listings == 1:
            raise OSError("store unavailable")  # after one key: partial progress is kept
        yield "vm-b"

    with caplog.at_level(logging.ERROR, logger="kvmrec.engine.workers"):
        resync = make_resync(keys)
        resync.trigger()
        eventually(lambda: listings == 1 and any(r.exc_info for r in caplog.records))
    assert len(q) == 1

    resync.trigger()
    eventually(lambda: len(q) == 2)


def test_resync_now_goes_through_queue_dedup(q: queues.WorkQueue[str]) -> None:
    resync = resyncs.Resync(q, lambda: ["vm-a", "vm-b"])
    resync.resync()
    resync.resync()
    assert len(q) == 2


def test_stop_before_start_is_fine(q: queues.WorkQueue[str]) -> None:
    assert resyncs.Resync(q, list).stop()


@pytest.mark.parametrize(
    ("period", "jitter"),
    [
        pytest.param(0.0, 0.1, id="zero-period"),
        pytest.param(300.0, 1.0, id="jitter-could-reach-zero"),
    ],
)
def test_invalid_settings_are_rejected(
    q: queues.WorkQueue[str], period: float, jitter: float
) -> None:
    with pytest.raises(ValueError):
        resyncs.Resync(q, list, period=period, jitter=jitter)
