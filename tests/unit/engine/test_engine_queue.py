"""The work queue: dedup, one-at-a-time processing, FIFO, delays on a fake clock, shutdown."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from kvmrec.engine import backoff as backoffs
from kvmrec.engine import clock as clocks
from kvmrec.engine import queue as queues

Key = tuple[str, str]  # (kind, name), as the service will use it


@pytest.fixture
def q(clock: clocks.FakeClock) -> Iterator[queues.WorkQueue[str]]:
    wq: queues.WorkQueue[str] = queues.WorkQueue(
        clock=clock, backoff=backoffs.Backoff(backoffs.BackoffSettings(jitter=0.0))
    )
    yield wq
    wq.shutdown()  # releases any getter thread a failing test left behind


def drain_ready(q: queues.WorkQueue[str]) -> list[str]:
    """Take (and finish) every key that is ready now, without waiting."""
    keys = []
    while (key := q.get(timeout=0)) is not None:
        keys.append(key)
        q.done(key)
    return keys


# -- dedup and order ------------------------------------------------------------------------


def test_adding_a_waiting_key_again_is_a_no_op(q: queues.WorkQueue[str]) -> None:
    for key in ["vm-a", "vm-b", "vm-a", "vm-a", "vm-b"]:
        q.add(key)

    assert len(q) == 2
    assert drain_ready(q) == ["vm-a", "vm-b"]


@pytest.mark.parametrize(
    "adds",
    [
        pytest.param(["a", "b", "c"], id="in-order"),
        pytest.param(["c", "a", "b"], id="shuffled"),
        pytest.param(["b", "a", "b", "c", "a"], id="duplicates-keep-first-position"),
    ],
)
def test_keys_come_out_in_first_added_order(q: queues.WorkQueue[str], adds: list[str]) -> None:
    for key in adds:
        q.add(key)
    assert drain_ready(q) == list(dict.fromkeys(adds))


def test_keys_can_be_any_hashable(clock: clocks.FakeClock) -> None:
    q: queues.WorkQueue[Key] = queues.WorkQueue(clock=clock)
    q.add(("Domain", "web-1"))
    q.add(("Network", "web-1"))
    q.add(("Domain", "web-1"))

    assert q.get(timeout=0) == ("Domain", "web-1")
    assert q.get(timeout=0) == ("Network", "web-1")
    assert q.get(timeout=0) is None


def test_get_with_zero_timeout_on_an_empty_queue_returns_none(q: queues.WorkQueue[str]) -> None:
    assert q.get(timeout=0) is None


# -- one key, one worker --------------------------------------------------------------------


def test_a_key_being_processed_is_not_handed_out_again(q: queues.WorkQueue[str]) -> None:
    q.add("vm-a")
    assert q.get(timeout=0) == "vm-a"

    q.add("vm-a")
    q.add("vm-a")

    # Marked dirty, but held back: a second worker must not start on it.
    assert len(q) == 0
    assert q.get(timeout=0) is None

    q.done("vm-a")

    # The change that arrived mid-reconcile is not lost: exactly one more run.
    assert len(q) == 1
    assert q.get(timeout=0) == "vm-a"
    q.done("vm-a")
    assert q.get(timeout=0) is None


def test_get_ready_takes_up_to_its_limit_without_waiting_each_marked_processing(
    q: queues.WorkQueue[str],
) -> None:
    assert q.get_ready(5) == []
    for key in ("a", "b", "c", "d"):
        q.add(key)
    assert q.get(timeout=0) == "a"
    assert q.get_ready(2) == ["b", "c"]
    q.add("b")  # changed while processing: held back, as for get
    assert q.get_ready(5) == ["d"]
    assert q.get_ready(5) == []
    for key in ("a", "b", "c", "d"):
        q.done(key)
    assert q.get_ready(5) == ["b"]


def test_wait_idle_returns_when_the_last_key_is_done(q: queues.WorkQueue[str]) -> None:
    assert q.wait_idle(0) is True
    q.add("a")
    assert q.wait_idle(0.01) is False  # queued
    assert q.get(timeout=0) == "a"
    assert q.wait_idle(0.01) is False  # processing
    timer = threading.Timer(0.05, q.done, args=("a",))
    timer.start()
    try:
        started = time.monotonic()
        assert q.wait_idle(10.0) is True
        assert time.monotonic() - started < 5.0  # woken by done, not by the timeout
    finally:
        timer.join()


def test_other_keys_flow_while_one_is_processing(q: queues.WorkQueue[str]) -> None:
    q.add("vm-a")
    assert q.get(timeout=0) == "vm-a"
    q.add("vm-a")
    q.add("vm-b")

    assert q.get(timeout=0) == "vm-b"


def test_done_without_a_re_add_does_not_requeue(q: queues.WorkQueue[str]) -> None:
    q.add("vm-a")
    key = q.get(timeout=0)
    assert key == "vm-a"
    q.done(key)

    assert len(q) == 0
    assert q.is_idle()


def test_re_added_key_goes_to_the_back_of_the_line(q: queues.WorkQueue[str]) -> None:
    q.add("vm-a")
    assert q.get(timeout=0) == "vm-a"
    q.add("vm-a")  # dirty while processing
    q.add("vm-b")
    q.done("vm-a")

    assert drain_ready(q) == ["vm-b", "vm-a"]


# -- delays ---------------------------------------------------------------------------------


def test_add_after_is_not_ready_before_its_deadline(
    q: queues.WorkQueue[str], clock: clocks.FakeClock
) -> None:
    q.add_after("vm-a", 5.0)

    assert q.get(timeout=0) is None
    assert q.pending_delayed() == 1
    assert len(q) == 0
    assert not q.is_idle()

    clock.advance(4.999)
    assert q.get(timeout=0) is None

    clock.advance(0.001)
    assert q.pending_delayed() == 0
    assert q.get(timeout=0) == "vm-a"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(10.0, 5.0, id="earlier-replaces-later"),
        pytest.param(5.0, 10.0, id="later-does-not-postpone"),
    ],
)
def test_the_earlier_deadline_wins(
    q: queues.WorkQueue[str], clock: clocks.FakeClock, first: float, second: float
) -> None:
    q.add_after("vm-a", first)
    q.add_after("vm-a", second)
    assert q.pending_delayed() == 1

    clock.advance(5.0)
    assert drain_ready(q) == ["vm-a"]

    # The superseded deadline is gone, not a second reconcile waiting to happen.
    clock.advance(10.0)
    assert q.pending_delayed() == 0
    assert drain_ready(q) == []


def test_due_keys_come_out_in_deadline_order(
    q: queues.WorkQueue[str], clock: clocks.FakeClock
) -> None:
    q.add_after("slow", 3.0)
    q.add_after("fast", 1.0)
    q.add_after("middle", 2.0)

    clock.advance(10.0)

    assert drain_ready(q) == ["fast", "middle", "slow"]


@pytest.mark.parametrize("delay", [pytest.param(0.0, id="zero"), pytest.param(-1.0, id="past")])
def test_add_after_without_a_positive_delay_adds_now(
    q: queues.WorkQueue[str], delay: float
) -> None:
    q.add_after("vm-a", delay)
    assert q.pending_delayed() == 0
    assert q.get(timeout=0) == "vm-a"


def test_a_due_key_that_is_processing_waits_for_done(
    q: queues.WorkQueue[str], clock: clocks.FakeClock
) -> None:
    q.add("vm-a")
    assert q.get(timeout=0) == "vm-a"
    q.add_after("vm-a", 1.0)
    clock.advance(1.0)

    assert q.get(timeout=0) is None
    q.done("vm-a")
    assert q.get(timeout=0) == "vm-a"


def test_a_blocked_get_wakes_when_the_clock_reaches_the_deadline(
    q: queues.WorkQueue[str], clock: clocks.FakeClock
) -> None:
    got: list[str | None] = []
    q.add_after("vm-a", 30.0)
    getter = threading.Thread(target=lambda: got.append(q.get()))
    getter.start()

    clock.advance(30.0)

    getter.join(2)
    assert got == ["vm-a"]


class CountingClock(clocks.FakeClock):
    """A FakeClock that counts how often the queue goes to sleep."""

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0

    def wait_until(self, condition: threading.Condition, deadline: float | None) -> None:
        self.waits += 1
        super().wait_until(condition, deadline)


def test_a_blocked_get_sleeps_instead_of_polling(
    eventually: Callable[[Callable[[], bool]], None],
) -> None:
    clock = CountingClock()
    q: queues.WorkQueue[str] = queues.WorkQueue(clock=clock)
    q.add_after("vm-a", 300.0)
    getter = threading.Thread(target=q.get)
    getter.start()
    eventually(lambda: clock.waits > 0)

    time.sleep(0.05)

    assert clock.waits == 1, "a getter with nothing due must park, not spin"
    q.shutdown()
    getter.join(2)
    assert not getter.is_alive()


def test_a_real_clock_get_wakes_at_the_next_deadline() -> None:
    q: queues.WorkQueue[str] = queues.WorkQueue()
    start = time.monotonic()
    q.add_after("vm-a", 0.03)

    assert q.get(timeout=2) == "vm-a"
    assert 0.025 <= time.monotonic() - start < 1.0


def test_get_timeout_is_measured_on_the_queue_clock(
    q: queues.WorkQueue[str], clock: clocks.FakeClock
) -> None:
    got: list[str | None] = ["not returned"]
    getter = threading.Thread(target=lambda: got.__setitem__(0, q.get(timeout=60)))
    getter.start()

    clock.advance(60)

    getter.join(2)
    assert not getter.is_alive()
    assert got == [None]


# -- rate limiting --------------------------------------------------------------------------


def test_rate_limited_adds_back_off_and_forget_resets(
    q: queues.WorkQueue[str], clock: clocks.FakeClock
) -> None:
    delays = []
    for attempt in range(1, 5):
        delays.append(q.add_rate_limited("vm-a"))
        assert q.num_requeues("vm-a") == attempt
        clock.advance(delays[-1] - 0.001)
        assert q.get(timeout=0) is None
        clock.advance(0.001)
        assert drain_ready(q) == ["vm-a"]
    assert delays == [1.0, 2.0, 4.0, 8.0]

    q.forget("vm-a")

    assert q.num_requeues("vm-a") == 0
    assert q.add_rate_limited("vm-a") == 1.0


# -- idleness and shutdown ------------------------------------------------------------------


def test_is_idle_only_when_nothing_is_ready_delayed_or_processing(
    q: queues.WorkQueue[str], clock: clocks.FakeClock
) -> None:
    assert q.is_idle()
    q.add("vm-a")
    assert not q.is_idle()
    assert q.get(timeout=0) == "vm-a"
    assert not q.is_idle(), "processing"
    q.add_after("vm-b", 1.0)
    q.done("vm-a")
    assert not q.is_idle(), "delayed"
    clock.advance(1.0)
    assert drain_ready(q) == ["vm-b"]
    assert q.is_idle()


def test_is_busy_while_ready_or_processing_but_not_while_only_delayed(
    q: queues.WorkQueue[str], clock: clocks.FakeClock
) -> None:
    assert not q.is_busy()
    q.add("vm-a")
    assert q.is_busy(), "ready"
    assert q.get(timeout=0) == "vm-a"
    assert q.is_busy(), "processing"
    q.add_after("vm-b", 1.0)
    q.done("vm-a")
    assert not q.is_busy(), "only delayed"
    clock.advance(1.0)
    assert q.is_busy(), "the delayed key is due"


def test_shutdown_wakes_a_blocked_get(q: queues.WorkQueue[str]) -> None:
    got: list[str | None] = ["not returned"]
    q.add_after("far-future", 3600.0)  # the getter is in a timed wait, not just idle
    getter = threading.Thread(target=lambda: got.__setitem__(0, q.get()))
    getter.start()
    time.sleep(0.01)  # give it the chance to block; the assertions hold either way

    q.shutdown()

    getter.join(2)
    assert not getter.is_alive()
    assert got == [None]


def test_shutdown_wakes_a_blocked_get_on_the_real_clock() -> None:
    q: queues.WorkQueue[str] = queues.WorkQueue()
    getter = threading.Thread(target=q.get)
    getter.start()
    time.sleep(0.01)

    q.shutdown()

    getter.join(2)
    assert not getter.is_alive()


def test_after_shutdown_nothing_is_handed_out_or_accepted(q: queues.WorkQueue[str]) -> None:
    q.add("queued")
    q.add_after("delayed", 1.0)

    q.shutdown()
    q.add("late")
    q.add_after("late-delayed", 1.0)

    assert q.shutting_down
    assert q.get(timeout=0) is None
    assert len(q) == 0
    assert q.pending_delayed() == 0
    assert q.is_idle()


def test_drain_waits_for_processing_keys(q: queues.WorkQueue[str]) -> None:
    q.add("vm-a")
    q.add("vm-b")
    assert q.get(timeout=0) == "vm-a"
    q.add("vm-a")  # dirty while processing: must not be re-queued after shutdown
    drained: list[bool] = []
    drainer = threading.Thread(target=lambda: drained.append(q.shutdown_with_drain(60)))
    drainer.start()
    drainer.join(0.05)
    assert drainer.is_alive(), "returned while vm-a was still processing"

    q.done("vm-a")

    drainer.join(2)
    assert drained == [True]
    assert q.get(timeout=0) is None
    assert q.is_idle()


def test_drain_gives_up_after_its_timeout(
    q: queues.WorkQueue[str], clock: clocks.FakeClock
) -> None:
    q.add("stuck")
    assert q.get(timeout=0) == "stuck"
    drained: list[bool] = []
    drainer = threading.Thread(target=lambda: drained.append(q.shutdown_with_drain(10)))
    drainer.start()

    clock.advance(10)

    drainer.join(2)
    assert drained == [False]


def test_drain_with_nothing_processing_returns_at_once(q: queues.WorkQueue[str]) -> None:
    q.add("never-started")
    assert q.shutdown_with_drain(60) is True
