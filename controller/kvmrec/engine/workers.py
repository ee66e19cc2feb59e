"""The threads that honour the reconcile contract (engine/contract.py).

A reconciler is a function from a key to a :class:`Result`. It gets only the key, never the
event that caused it, reads desired and live state afresh, and acts; so it must be idempotent,
and it may run any number of times. What happens next depends on how it returns, as in
controller-runtime:

=====================================  =====================================================
reconcile ...                          the worker ...
=====================================  =====================================================
returns ``Result()``                   forgets the key's backoff; nothing is scheduled
returns ``Result(requeue_after=30)``   forgets the backoff; adds the key again in 30 s (a
                                       poll, e.g. waiting for a guest agent to come up)
raises :class:`PermanentError`         forgets the backoff; does *not* retry: the input must
                                       change first, and a change re-adds the key anyway
raises :class:`Superseded`             adds the key again at once (no failure); after
                                       ``RERUNS_AT_ONCE`` in a row, rate-limited
raises any other ``Exception``         adds the key rate-limited (exponential backoff)
=====================================  =====================================================

Any other exception is what Go calls a panic: a bug or an unexpected libvirt error. It is
logged with its traceback, reported and retried, and it never kills the worker thread; a pool
that silently shrinks to zero would be a controller that silently stops. Exceptions
that derive only from ``BaseException`` (``KeyboardInterrupt``, ``SystemExit``) propagate:
they are requests to stop, not failures. Either way the key is marked done, so it can never
get stuck in *processing*.

A failure is logged once per change: the first time, and again only when its message
changes or after the key has succeeded in between. The same failure coming back on every
retry or resync goes to DEBUG; a log that repeats itself every minute hides what is new.

What a reconcile means for status, events and metrics is not this module's business: an
:class:`Observer` is told about every outcome and the service records it.

Given a ``reconcile_many`` as well, a worker takes the keys that are ready at once (about
``batch_budget`` seconds of reconciles of the length seen lately, at most ``max_batch``)
and honours each one's outcome as above: where reconciles are short (a host at start-up,
a resync) their stages run back to back (engine/stages.py); where they wait on a daemon
(QEMU starting a guest) each worker takes one, and the pool runs them side by side.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

from kvmrec.engine import queue as queues
from kvmrec.engine.contract import (
    Outcome,
    PermanentError,
    Reconcile,
    ReconcileMany,
    Result,
    Superseded,
)

__all__ = [
    "NullObserver",
    "Observer",
    "PermanentError",
    "Reconcile",
    "Result",
    "Superseded",
    "Workers",
]

log = logging.getLogger(__name__)

BATCH_BUDGET = 0.025  # seconds of reconciles a worker takes at once
MAX_BATCH = 32
# A key superseded this many times in a row runs again after a backoff, not at once: a
# writer that changes the status again and again (a command in a loop) must not keep a
# worker rerunning one key.
RERUNS_AT_ONCE = 3

K = TypeVar("K", bound=Hashable)
K_contra = TypeVar("K_contra", bound=Hashable, contravariant=True)


class Observer(Protocol[K_contra]):
    """Told about every reconcile outcome, from the worker thread that ran it.

    Callbacks should be quick: a worker is blocked while they run. An exception raised here
    is logged and otherwise ignored.
    """

    def on_success(self, key: K_contra, result: Result, duration: float) -> None:
        """``duration``: real seconds the reconcile took."""
        ...

    def on_error(
        self,
        key: K_contra,
        exc: Exception,
        retries: int,
        permanent: bool,
        delay: float | None,
    ) -> None:
        """A reconcile raised.

        For a retried error, ``retries`` is the number of consecutive failures including this
        one and ``delay`` the backoff before the next attempt. For a permanent error,
        ``retries`` is the number of retried failures that preceded it and ``delay`` is None.
        """
        ...


class NullObserver:
    """The default :class:`Observer`: ignores everything."""

    def on_success(self, key: Hashable, result: Result, duration: float) -> None:
        pass

    def on_error(
        self,
        key: Hashable,
        exc: Exception,
        retries: int,
        permanent: bool,
        delay: float | None,
    ) -> None:
        pass


class Workers(Generic[K]):
    """A fixed pool of threads taking keys from a :class:`~kvmrec.engine.queue.WorkQueue`.

    Threads are daemons so that a reconcile stuck inside libvirt cannot keep the process
    alive after :meth:`stop` gave up on it; systemd would otherwise have to SIGKILL us.
    """

    def __init__(
        self,
        queue: queues.WorkQueue[K],
        reconcile: Reconcile[K],
        *,
        count: int = 4,
        observer: Observer[K] | None = None,
        name: str = "kvmrec-worker",
        reconcile_many: ReconcileMany[K] | None = None,
        batch_budget: float = BATCH_BUDGET,
        max_batch: int = MAX_BATCH,
    ) -> None:
        """``reconcile_many``: reconciles several keys at once (engine/stages.py); with it a
        worker takes the ready keys worth ``batch_budget`` seconds, at most ``max_batch``."""
        if count < 1:
            raise ValueError(f"a worker pool needs at least one thread, got {count!r}")
        self.queue = queue
        self._reconcile = reconcile
        self._count = count
        self._observer: Observer[K] = observer if observer is not None else NullObserver()
        self._name = name
        self._many = reconcile_many
        self._batch_budget = batch_budget
        self._max_batch = max_batch
        self._typical: float | None = None  # a reconcile's real seconds lately (EWMA)
        self._batching = threading.Lock()  # held by the worker running a batch
        self._threads: list[threading.Thread] = []
        # Thread name -> (its keys, when their reconciles began, time.monotonic), for stuck().
        self._busy_lock = threading.Lock()
        self._busy: dict[str, tuple[list[K], float]] = {}
        # Key -> the failure last logged for it (type and message), under _busy_lock.
        self._failures: dict[K, str] = {}
        # Key -> how many of its reconciles in a row were superseded, under _busy_lock.
        self._superseded: dict[K, int] = {}

    def start(self) -> None:
        """Spawn the worker threads. A pool can be started once."""
        if self._threads:
            raise RuntimeError(f"{self._name} already started")
        self._threads = [
            threading.Thread(target=self._run, name=f"{self._name}-{i}", daemon=True)
            for i in range(self._count)
        ]
        for thread in self._threads:
            thread.start()

    def alive(self) -> bool:
        """Whether every worker thread is running (a health check, not a progress check)."""
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def stuck(self, after: float) -> list[tuple[K, float]]:
        """Keys whose reconcile has run for more than ``after`` real seconds, with how long.

        A progress check to go with :meth:`alive`: a reconcile that never returns (a call
        into a hung daemon without a timeout) keeps its thread alive but its key frozen.
        """
        now = time.monotonic()
        with self._busy_lock:
            busy = list(self._busy.values())
        return [(key, now - began) for keys, began in busy if now - began > after for key in keys]

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop taking new keys, wait for in-flight reconciles, and join the threads.

        Shuts the queue down (keys still queued are dropped; see the queue module for why).
        Returns True if every in-flight reconcile finished and every thread exited within
        ``timeout`` seconds; threads still stuck are left behind as daemons. The drain is timed
        on the queue's clock like every queue wait; with a ``FakeClock`` it ends when the
        in-flight work is done or the test advances the clock.
        """
        # Joining is timed in real seconds whatever the queue's clock: the threads are real,
        # and once drained they exit at once, so this bound is only a safety net.
        give_up = time.monotonic() + timeout
        drained = self.queue.shutdown_with_drain(timeout)
        for thread in self._threads:
            thread.join(max(give_up - time.monotonic(), 0.0))
        return drained and not any(thread.is_alive() for thread in self._threads)

    def _run(self) -> None:
        me = threading.current_thread().name
        while (key := self.queue.get()) is not None:
            limit = self._batch_limit()
            # Short reconciles are work for the interpreter alone, which runs one thread at
            # a time: batches take turns, so each keeps its stages back to back instead of
            # handing the interpreter's lock to the others at every backend call.
            with self._batching if limit > 1 else contextlib.nullcontext():
                keys = [key, *self.queue.get_ready(limit - 1)]
                self._work(me, keys)

    def _work(self, me: str, keys: list[K]) -> None:
        with self._busy_lock:
            self._busy[me] = (keys, time.monotonic())
        try:
            if len(keys) == 1:
                self._process(keys[0])
            else:
                self._process_many(keys)
        finally:
            with self._busy_lock:
                del self._busy[me]
            for done in keys:
                self.queue.done(done)

    def _batch_limit(self) -> int:
        """How many keys to take at once: about ``batch_budget`` seconds of reconciles of
        the typical length lately. Reconciles that wait on a daemon (a QEMU guest's start
        takes a second) go one at a time, so that the other workers share them out."""
        typical = self._typical
        if self._many is None or typical is None:
            return 1
        return max(1, min(self._max_batch, int(self._batch_budget / max(typical, 1e-4))))

    def _process(self, key: K) -> None:
        # perf_counter, not the queue's clock: a duration is a measurement of real work for
        # metrics, and under a fake clock it would always read zero.
        started = time.perf_counter()
        try:
            result = self._reconcile(key)
        except Exception as exc:
            self._settle(key, None, exc, time.perf_counter() - started)
            return
        self._settle(key, result, None, time.perf_counter() - started)

    def _process_many(self, keys: list[K]) -> None:
        assert self._many is not None
        try:
            outcomes = self._many(keys)
        except Exception as exc:  # the batch as a whole: each of its keys failed so
            outcomes = [Outcome(error=exc) for _ in keys]
        for key, outcome in zip(keys, outcomes, strict=True):
            self._settle(key, outcome.result, outcome.error, outcome.duration)

    def _settle(
        self, key: K, result: Result | None, error: Exception | None, duration: float
    ) -> None:
        """What follows a reconcile of ``key``: its retry, requeue or nothing, and the
        observer told."""
        typical = self._typical
        self._typical = duration if typical is None else typical + 0.2 * (duration - typical)
        if isinstance(error, Superseded):
            self._rerun(key, error)
            return
        if self._superseded:  # only this key's own outcomes add it
            with self._busy_lock:
                self._superseded.pop(key, None)
        if isinstance(error, PermanentError):
            retries = self.queue.num_requeues(key)
            self.queue.forget(key)
            level = logging.WARNING if self._is_news(key, error) else logging.DEBUG
            log.log(level, "%s: %s (not retried until its input changes)", key, error)
            self._notify(self._observer.on_error, key, error, retries, True, None)
            return
        if error is not None or result is None:
            exc = error or RuntimeError("a reconcile returned no result")
            delay = self.queue.add_rate_limited(key)
            retries = self.queue.num_requeues(key)
            # Traceback included: this is either a bug or a failure nobody anticipated, and
            # the traceback is the only evidence of where.
            if self._is_news(key, exc):
                log.error(
                    "%s: reconcile failed (retry %d in %.1f s)", key, retries, delay, exc_info=exc
                )
            else:
                log.debug("%s: %s (again; retry %d in %.1f s)", key, exc, retries, delay)
            self._notify(self._observer.on_error, key, exc, retries, False, delay)
            return
        with self._busy_lock:
            self._failures.pop(key, None)
        self.queue.forget(key)
        if result.requeue_after is not None:
            self.queue.add_after(key, result.requeue_after)
        self._notify(self._observer.on_success, key, result, duration)

    def _rerun(self, key: K, superseded: Superseded) -> None:
        """Run ``key`` again from a fresh read: at once, unless it keeps being superseded."""
        with self._busy_lock:
            in_a_row = self._superseded[key] = self._superseded.get(key, 0) + 1
        if in_a_row <= RERUNS_AT_ONCE:
            log.info("%s: %s", key, superseded)
            self.queue.add(key)  # again once this run is done
            return
        delay = self.queue.add_rate_limited(key)
        log.warning("%s: superseded %d times in a row; again in %.1f s", key, in_a_row, delay)

    def _is_news(self, key: K, exc: Exception) -> bool:
        """Whether this failure of ``key`` differs from the last one logged (and note it)."""
        failure = f"{type(exc).__name__}: {exc}"
        with self._busy_lock:
            news = self._failures.get(key) != failure
            self._failures[key] = failure
        return news

    def _notify(self, callback: Callable[..., None], *args: object) -> None:
        # An observer that raises must not take the worker down with it, nor turn a
        # successful reconcile into a retry: the outcome has already been acted upon.
        try:
            callback(*args)
        except Exception:
            log.exception("observer %s raised", getattr(callback, "__qualname__", callback))
