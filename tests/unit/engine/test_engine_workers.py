"""Workers: the reconcile contract (success, requeue-after, error, permanent error), one key at
a time, panics that never kill a thread, and a stop that drains in-flight work."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from kvmrec.api.kinds import ObjectKey
from kvmrec.engine import backoff as backoffs
from kvmrec.engine import clock as clocks
from kvmrec.engine import queue as queues
from kvmrec.engine import workers

Eventually = Callable[[Callable[[], bool]], None]
Event = tuple[object, ...]


@dataclass
class Recorder:
    """An Observer that keeps every outcome and lets a test wait for the n-th one."""

    events: list[Event] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def on_success(self, key: str, result: workers.Result, duration: float) -> None:
        assert duration >= 0
        self._record(("ok", key, result))

    def on_error(
        self, key: str, exc: Exception, retries: int, permanent: bool, delay: float | None
    ) -> None:
        self._record(("error", key, type(exc).__name__, retries, permanent, delay))

    def _record(self, event: Event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait_for(self, n: int, timeout: float = 2.0) -> Event:
        """Wait for the n-th event (1-based) and return it."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.events) >= n, timeout):
                pytest.fail(f"expected {n} outcomes, got {self.events}")
            return self.events[n - 1]


Reconciler = Callable[[str], workers.Result]
Factory = Callable[..., tuple[queues.WorkQueue[str], workers.Workers[str], Recorder]]


@pytest.fixture
def make_pool() -> Iterator[Factory]:
    """Build a started pool; every pool is stopped at teardown so no thread outlives a test."""
    pools: list[workers.Workers[str]] = []

    def make(
        reconcile: Reconciler,
        *,
        clock: clocks.Clock | None = None,
        count: int = 2,
        observer: workers.Observer[str] | None = None,
    ) -> tuple[queues.WorkQueue[str], workers.Workers[str], Recorder]:
        q: queues.WorkQueue[str] = queues.WorkQueue(
            clock=clock, backoff=backoffs.Backoff(backoffs.BackoffSettings(jitter=0.0))
        )
        recorder = Recorder()
        pool = workers.Workers(q, reconcile, count=count, observer=observer or recorder)
        pool.start()
        pools.append(pool)
        return q, pool, recorder

    yield make
    for pool in pools:
        assert pool.stop(timeout=2), "a test left a reconcile running"


# -- the reconcile contract -----------------------------------------------------------------


def test_success_is_reported_and_not_requeued(make_pool: Factory, eventually: Eventually) -> None:
    q, _, rec = make_pool(lambda key: workers.Result())
    q.add("vm-a")

    assert rec.wait_for(1) == ("ok", "vm-a", workers.Result())
    eventually(q.is_idle)
    assert q.num_requeues("vm-a") == 0


def test_requeue_after_polls_again_on_schedule(make_pool: Factory, clock: clocks.FakeClock) -> None:
    calls: list[str] = []

    def reconcile(key: str) -> workers.Result:
        calls.append(key)
        return workers.Result(requeue_after=30.0)

    q, _, rec = make_pool(reconcile, clock=clock)
    q.add("vm-a")
    rec.wait_for(1)
    assert q.pending_delayed() == 1
    assert q.num_requeues("vm-a") == 0, "a poll is not a failure"

    clock.advance(29.9)
    assert q.pending_delayed() == 1
    assert calls == ["vm-a"]

    clock.advance(0.1)
    assert rec.wait_for(2) == ("ok", "vm-a", workers.Result(requeue_after=30.0))
    assert calls == ["vm-a", "vm-a"]


def test_errors_are_retried_with_growing_backoff_and_success_resets_it(
    make_pool: Factory, clock: clocks.FakeClock
) -> None:
    outcomes: list[Exception | None] = [RuntimeError("libvirtd busy")] * 3 + [None] * 1
    outcomes += [RuntimeError("again")]
    calls = 0

    def reconcile(key: str) -> workers.Result:
        nonlocal calls
        outcome = outcomes[calls]
        calls += 1
        if outcome is not None:
            raise outcome
        return workers.Result()

    q, _, rec = make_pool(reconcile, clock=clock)
    q.add("vm-a")

    assert rec.wait_for(1) == ("error", "vm-a", "RuntimeError", 1, False, 1.0)
    assert q.num_requeues("vm-a") == 1
    clock.advance(0.999)
    assert calls == 1, "retried before the backoff expired"
    clock.advance(0.001)
    assert rec.wait_for(2) == ("error", "vm-a", "RuntimeError", 2, False, 2.0)
    clock.advance(2.0)
    assert rec.wait_for(3) == ("error", "vm-a", "RuntimeError", 3, False, 4.0)
    assert q.num_requeues("vm-a") == 3
    clock.advance(4.0)
    assert rec.wait_for(4) == ("ok", "vm-a", workers.Result())
    assert q.num_requeues("vm-a") == 0

    # The history is gone: the next failure starts again from the base delay.
    q.add("vm-a")
    assert rec.wait_for(5) == ("error", "vm-a", "RuntimeError", 1, False, 1.0)


def test_a_permanent_error_is_not_retried_and_clears_the_backoff(
    make_pool: Factory, clock: clocks.FakeClock, eventually: Eventually
) -> None:
    errors = [RuntimeError("transient"), workers.PermanentError("disk size cannot shrink")]
    calls = 0

    def reconcile(key: str) -> workers.Result:
        nonlocal calls
        calls += 1
        raise errors[calls - 1]

    q, _, rec = make_pool(reconcile, clock=clock)
    q.add("vm-a")
    rec.wait_for(1)
    clock.advance(1.0)

    assert rec.wait_for(2) == ("error", "vm-a", "PermanentError", 1, True, None)
    eventually(q.is_idle)
    assert q.pending_delayed() == 0
    assert q.num_requeues("vm-a") == 0
    clock.advance(3600)
    assert q.get(timeout=0) is None
    assert calls == 2


def test_a_superseded_reconcile_runs_again_at_once_and_is_no_failure(
    make_pool: Factory, eventually: Eventually, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    def reconcile(key: str) -> workers.Result:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise workers.Superseded("the status changed meanwhile")
        return workers.Result()

    q, _, rec = make_pool(reconcile)
    with caplog.at_level(logging.INFO):
        q.add("vm-a")
        # No clock advance: the second run follows at once, with no backoff to wait out.
        assert rec.wait_for(1) == ("ok", "vm-a", workers.Result())
    eventually(q.is_idle)
    assert calls == 2 and len(rec.events) == 1  # the superseded run told no one
    assert q.num_requeues("vm-a") == 0 and q.pending_delayed() == 0
    assert [r.levelname for r in caplog.records if "changed meanwhile" in r.message] == ["INFO"]


def test_a_key_superseded_again_and_again_waits_a_backoff_then_runs(
    make_pool: Factory,
    clock: clocks.FakeClock,
    eventually: Eventually,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0
    at_once = workers.RERUNS_AT_ONCE

    def reconcile(key: str) -> workers.Result:
        nonlocal calls
        calls += 1
        if calls <= at_once + 1:
            raise workers.Superseded("the status changed meanwhile")
        return workers.Result()

    q, _, rec = make_pool(reconcile, clock=clock)
    with caplog.at_level(logging.INFO):
        q.add("vm-a")
        # The first run and its reruns at once, with no clock advance; the one after waits.
        eventually(lambda: calls == at_once + 1 and q.pending_delayed() == 1)
        assert rec.events == [] and q.num_requeues("vm-a") == 1
        clock.advance(0.999)
        assert calls == at_once + 1, "rerun before the backoff expired"
        clock.advance(0.001)
        assert rec.wait_for(1) == ("ok", "vm-a", workers.Result())
    assert calls == at_once + 2 and q.num_requeues("vm-a") == 0
    warned = [r for r in caplog.records if r.levelname == "WARNING"]
    assert [r.getMessage() for r in warned] == [
        f"vm-a: superseded {at_once + 1} times in a row; again in 1.0 s"
    ]

    # The streak is over: the next superseded reconcile runs again at once.
    calls = at_once
    q.add("vm-a")
    assert rec.wait_for(2) == ("ok", "vm-a", workers.Result())
    assert calls == at_once + 2 and q.pending_delayed() == 0


def test_an_unexpected_exception_is_logged_with_traceback_and_the_thread_survives(
    make_pool: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    def reconcile(key: str) -> workers.Result:
        if key == "vm-bad":
            raise KeyError("a bug")
        return workers.Result()

    # One thread: if the panic killed it, vm-good would never run.
    q, _, rec = make_pool(reconcile, count=1)
    with caplog.at_level(logging.ERROR, logger="kvmrec.engine.workers"):
        q.add("vm-bad")
        q.add("vm-good")
        assert rec.wait_for(1)[:3] == ("error", "vm-bad", "KeyError")
        assert rec.wait_for(2) == ("ok", "vm-good", workers.Result())

    [record] = [r for r in caplog.records if "vm-bad" in r.getMessage()]
    assert record.exc_info is not None
    assert record.exc_info[0] is KeyError


def test_a_failure_is_logged_once_per_change_by_its_key(
    make_pool: Factory, clock: clocks.FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The same failure on every retry or resync is not news: it is logged when it first
    occurs, when its message changes, and again only after the key succeeded in between."""
    outcomes: list[Exception | None] = [
        workers.PermanentError("disk size cannot shrink"),
        workers.PermanentError("disk size cannot shrink"),  # a resync: same failure
        workers.PermanentError("pool images is gone"),  # another failure
        RuntimeError("libvirtd busy"),
        RuntimeError("libvirtd busy"),  # its retry
        None,
        workers.PermanentError("pool images is gone"),  # after a success: news again
    ]

    def reconcile(key: str) -> workers.Result:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return workers.Result()

    q, _, rec = make_pool(reconcile, clock=clock, count=1)
    with caplog.at_level(logging.DEBUG, logger="kvmrec.engine.workers"):
        for n in range(1, 8):
            if n == 5:
                clock.advance(1.0)  # the retry of the RuntimeError
            else:
                q.add("Domain/web-1")
            rec.wait_for(n)
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == [
        "Domain/web-1: disk size cannot shrink (not retried until its input changes)",
        "Domain/web-1: pool images is gone (not retried until its input changes)",
        "Domain/web-1: reconcile failed (retry 1 in 1.0 s)",
        "Domain/web-1: pool images is gone (not retried until its input changes)",
    ]
    quiet = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("disk size cannot shrink" in m for m in quiet)
    assert any("libvirtd busy (again; retry 2" in m for m in quiet)


def test_a_failure_names_its_object_as_kind_slash_name(
    make_pool: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    """Never a Python repr (``ObjectKey(kind=..., name=...)``)."""

    def reconcile(key: object) -> workers.Result:
        raise workers.PermanentError("no such pool")

    q, _, rec = make_pool(reconcile)
    with caplog.at_level(logging.WARNING, logger="kvmrec.engine.workers"):
        q.add(ObjectKey("Domain", "web-1"))  # type: ignore[arg-type]
        rec.wait_for(1)
    [message] = [r.getMessage() for r in caplog.records]
    assert message.startswith("Domain/web-1: no such pool")
    assert "ObjectKey" not in message


def test_an_observer_that_raises_changes_nothing(
    make_pool: Factory, eventually: Eventually, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    class BrokenObserver(workers.NullObserver):
        def on_success(self, key: object, result: workers.Result, duration: float) -> None:
            raise RuntimeError("metrics backend down")

    def reconcile(key: str) -> workers.Result:
        seen.append(key)
        return workers.Result()

    q, _, _ = make_pool(reconcile, count=1, observer=BrokenObserver())
    with caplog.at_level(logging.ERROR, logger="kvmrec.engine.workers"):
        q.add("vm-a")
        q.add("vm-b")
        eventually(lambda: seen == ["vm-a", "vm-b"])
        eventually(q.is_idle)

    assert q.num_requeues("vm-a") == 0, "a successful reconcile was turned into a retry"
    assert any("observer" in r.getMessage() for r in caplog.records)


# -- concurrency ----------------------------------------------------------------------------


def test_a_key_re_added_mid_reconcile_waits_then_runs_exactly_once_more(
    make_pool: Factory, eventually: Eventually
) -> None:
    entered = threading.Event()
    release = threading.Event()
    calls: list[str] = []

    def reconcile(key: str) -> workers.Result:
        calls.append(key)
        if len(calls) == 1:
            entered.set()
            release.wait(2)
        return workers.Result()

    q, _, _ = make_pool(reconcile, count=4)
    q.add("vm-a")
    assert entered.wait(2)

    for _ in range(50):
        q.add("vm-a")

    # Three idle workers, and none of them may have it.
    assert len(q) == 0
    assert calls == ["vm-a"]

    release.set()
    eventually(q.is_idle)
    assert calls == ["vm-a", "vm-a"]


def test_two_workers_never_run_the_same_key_concurrently(
    make_pool: Factory, eventually: Eventually
) -> None:
    keys = [f"vm-{i}" for i in range(4)]
    lock = threading.Lock()
    active = dict.fromkeys(keys, 0)
    most_active = dict.fromkeys(keys, 0)
    runs = dict.fromkeys(keys, 0)

    def reconcile(key: str) -> workers.Result:
        with lock:
            active[key] += 1
            most_active[key] = max(most_active[key], active[key])
            runs[key] += 1
        time.sleep(0.001)  # long enough for another worker to try the same key
        with lock:
            active[key] -= 1
        return workers.Result()

    q, _, _ = make_pool(reconcile, count=8)
    for _ in range(60):
        for key in keys:
            q.add(key)
        time.sleep(0.0005)
    eventually(q.is_idle)

    assert most_active == dict.fromkeys(keys, 1)
    assert all(n > 1 for n in runs.values()), runs


def test_different_keys_do_run_in_parallel(make_pool: Factory) -> None:
    # Each reconcile waits for the other: only two workers running at once get past it.
    both_inside = threading.Barrier(2, timeout=2)

    def reconcile(key: str) -> workers.Result:
        both_inside.wait()
        return workers.Result()

    q, _, rec = make_pool(reconcile, count=2)
    q.add("vm-a")
    q.add("vm-b")

    outcomes = {rec.wait_for(1), rec.wait_for(2)}
    assert outcomes == {("ok", "vm-a", workers.Result()), ("ok", "vm-b", workers.Result())}


# -- lifecycle ------------------------------------------------------------------------------


def test_stop_lets_in_flight_work_finish_and_starts_nothing_new(make_pool: Factory) -> None:
    entered = threading.Event()
    release = threading.Event()
    finished: list[str] = []

    def reconcile(key: str) -> workers.Result:
        entered.set()
        release.wait(2)
        finished.append(key)
        return workers.Result()

    q, pool, _ = make_pool(reconcile, count=1)
    q.add("in-flight")
    assert entered.wait(2)
    q.add("queued")
    stopped: list[bool] = []
    stopper = threading.Thread(target=lambda: stopped.append(pool.stop(timeout=2)))
    stopper.start()

    stopper.join(0.05)
    assert stopper.is_alive(), "stop returned while a reconcile was in flight"

    release.set()
    stopper.join(2)
    assert stopped == [True]
    assert finished == ["in-flight"]
    assert q.is_idle()


def test_stop_reports_a_reconcile_that_outlives_the_timeout(make_pool: Factory) -> None:
    entered = threading.Event()
    release = threading.Event()

    def reconcile(key: str) -> workers.Result:
        entered.set()
        release.wait(2)
        return workers.Result()

    q, pool, _ = make_pool(reconcile, count=1)
    q.add("stuck")
    assert entered.wait(2)
    try:
        assert pool.stop(timeout=0.05) is False
    finally:
        release.set()
    assert pool.stop(timeout=2) is True


def test_a_pool_starts_once(make_pool: Factory) -> None:
    _, pool, _ = make_pool(lambda key: workers.Result())
    with pytest.raises(RuntimeError):
        pool.start()


def test_a_pool_needs_a_thread() -> None:
    q: queues.WorkQueue[str] = queues.WorkQueue()
    with pytest.raises(ValueError):
        workers.Workers(q, lambda key: workers.Result(), count=0)


def test_requeue_after_cannot_be_negative() -> None:
    with pytest.raises(ValueError):
        workers.Result(requeue_after=-1.0)
