"""The work queue: which key to reconcile next, and the promise that no key runs twice at once.

This is client-go's workqueue (the plain, delaying and rate-limiting queues in one class),
because its three rules are exactly what a level-triggered controller needs:

1. **A queue holds keys, not events.** Ten changes to one manifest before a worker gets to it
   are ten ``add`` calls and one reconcile; the reconcile reads the current state anyway. A key
   already waiting (*dirty*) is not added twice.
2. **One key is processed by at most one worker.** ``get`` moves a key into *processing*. If
   the key is added again meanwhile, it is only marked dirty, not queued, so no second worker
   can pick it up; ``done`` puts it back in the queue. So two reconciles of one domain never
   race each other in libvirt, yet a change that arrived mid-reconcile is never lost.
3. **Time is a first-class input.** ``add_after`` holds a key back until a deadline (a
   ``requeue_after`` poll, a backoff); if the key is already waiting for a later deadline,
   the earlier one wins, so a retry is never postponed by a slower poll. Due keys go through
   ``add`` and so obey rules 1 and 2. ``add_rate_limited`` delays by the key's
   :class:`~kvmrec.engine.backoff.Backoff`, and ``forget`` resets it.

A delayed key and a ready key are independent, as in client-go: ``add`` does not cancel a
pending ``add_after``. The extra reconcile that may cause is harmless (reconciles are
idempotent), while cancelling could silently drop a poll the reconciler asked for.

Waiting. One ``threading.Condition`` guards everything. A blocked ``get`` sleeps until the
earliest of: a key is added, the next delayed deadline, its own timeout, or shutdown; it never
polls. Every wait goes through the injected :class:`~kvmrec.engine.clock.Clock`, so with a
``FakeClock`` all deadlines, timeouts included, are on fake time: ``clock.advance(30)`` wakes
a worker whose key was due in 30 s, and ``get(timeout=0)`` checks what is due without waiting.

Shutting down. After ``shutdown`` the queue hands out nothing more (``get`` returns ``None``)
and ignores new ``add`` calls; keys still queued are dropped. That is safe because nothing in a
queue is precious: on the next start the sources relist and the resync re-adds every key. It
is also what a stopping service wants: finish the reconciles already in flight
(``shutdown_with_drain``), do not start new ones against a libvirtd that may be going away
with us. (client-go hands out the rest of the queue during a drain; we deliberately don't.)
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

from kvmrec.engine import backoff as backoffs
from kvmrec.engine import clock as clocks

__all__ = ["WorkQueue"]

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    """A deduplicating, delaying, rate-limited FIFO of keys; see the module docstring.

    All methods are thread-safe.
    """

    def __init__(
        self,
        *,
        clock: clocks.Clock | None = None,
        backoff: backoffs.Backoff[K] | None = None,
    ) -> None:
        self._clock: clocks.Clock = clock if clock is not None else clocks.SystemClock()
        self._backoff: backoffs.Backoff[K] = backoff if backoff is not None else backoffs.Backoff()
        lock = threading.RLock()
        self._cond = threading.Condition(lock)
        # Told when the last key is done, for wait_idle (on the same lock, so that a done
        # does not wake a poller for every key).
        self._idle = threading.Condition(lock)
        # The ready keys, in order. Invariant: every key in _queue is also in _dirty, and no
        # key in _queue is in _processing; a key appears in _queue at most once.
        self._queue: deque[K] = deque()
        # Keys that need a reconcile that has not started yet: queued, or processing and
        # changed since the reconcile started.
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        # Delayed keys: a heap of (deadline, tiebreak, key) and the authoritative deadline per
        # key. When an earlier deadline replaces a later one, the old heap entry stays behind
        # and is skipped as stale when popped; this keeps add_after O(log n) without a
        # search-and-remove in the heap. The tiebreak keeps equal deadlines in insertion
        # order and means keys never need to be comparable.
        self._delayed: list[tuple[float, int, K]] = []
        self._deadlines: dict[K, float] = {}
        self._tiebreak = itertools.count()
        self._shutting_down = False

    # -- adding ---------------------------------------------------------------------------

    def add(self, key: K) -> None:
        """Mark ``key`` as needing a reconcile. A no-op for a key already waiting."""
        with self._cond:
            self._add_locked(key)

    def add_after(self, key: K, delay: float) -> None:
        """Add ``key`` once ``delay`` seconds have passed; an earlier pending deadline wins."""
        with self._cond:
            if self._shutting_down:
                return
            if delay <= 0:
                self._add_locked(key)
                return
            deadline = self._clock.monotonic() + delay
            current = self._deadlines.get(key)
            if current is not None and current <= deadline:
                return
            self._deadlines[key] = deadline
            heapq.heappush(self._delayed, (deadline, next(self._tiebreak), key))
            # A getter may be sleeping until a later deadline (or forever); let it recompute.
            self._cond.notify_all()

    def add_rate_limited(self, key: K) -> float:
        """Count a failure of ``key`` and add it after its backoff delay, which is returned."""
        delay = self._backoff.next_delay(key)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """Reset the backoff of ``key`` (it reconciled, or retrying is pointless).

        This does not remove the key from the queue: forgetting is about the failure history,
        not about pending work.
        """
        self._backoff.forget(key)

    def num_requeues(self, key: K) -> int:
        """How many consecutive failures of ``key`` have been rate-limited since ``forget``."""
        return self._backoff.failures(key)

    # -- processing -----------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> K | None:
        """Take the next ready key and mark it processing; call :meth:`done` when finished.

        Blocks until a key is ready (delayed keys become ready at their deadline), or
        ``timeout`` seconds on the queue's clock have passed, or the queue shuts down.
        Returns ``None`` on timeout or shutdown. ``timeout=0`` only promotes due keys and
        returns without waiting.
        """
        with self._cond:
            give_up = None if timeout is None else self._clock.monotonic() + max(timeout, 0.0)
            while True:
                if self._shutting_down:
                    return None
                now = self._clock.monotonic()
                self._promote_due_locked(now)
                if self._queue:
                    key = self._queue.popleft()
                    self._processing.add(key)
                    self._dirty.discard(key)
                    return key
                if give_up is not None and now >= give_up:
                    return None
                wake_at = give_up
                if self._delayed:
                    next_due = self._delayed[0][0]
                    wake_at = next_due if wake_at is None else min(wake_at, next_due)
                self._clock.wait_until(self._cond, wake_at)

    def get_ready(self, limit: int) -> list[K]:
        """Up to ``limit`` more keys that are ready now, without waiting, each marked
        processing as :meth:`get` marks its key (a worker taking a batch)."""
        taken: list[K] = []
        with self._cond:
            if self._shutting_down:
                return taken
            while self._queue and len(taken) < limit:
                key = self._queue.popleft()
                self._processing.add(key)
                self._dirty.discard(key)
                taken.append(key)
        return taken

    def done(self, key: K) -> None:
        """Finish processing ``key``; if it was added meanwhile, queue it again now."""
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty and not self._shutting_down:
                self._queue.append(key)
            # Wakes a getter for the re-queued key, and a drain waiting for processing to empty.
            self._cond.notify_all()
            if not (self._queue or self._processing):
                self._idle.notify_all()

    # -- inspection -----------------------------------------------------------------------

    def __len__(self) -> int:
        """The number of keys ready to be handed out now (delayed keys that are due count)."""
        with self._cond:
            self._promote_due_locked(self._clock.monotonic())
            return len(self._queue)

    def pending_delayed(self) -> int:
        """The number of keys waiting for a deadline that has not yet passed."""
        with self._cond:
            self._promote_due_locked(self._clock.monotonic())
            return len(self._deadlines)

    def is_idle(self) -> bool:
        """True when no key is ready, delayed or being processed."""
        with self._cond:
            self._promote_due_locked(self._clock.monotonic())
            return not (self._queue or self._deadlines or self._processing)

    def is_busy(self) -> bool:
        """True when a key is ready or being processed (delayed keys do not count)."""
        with self._cond:
            self._promote_due_locked(self._clock.monotonic())
            return bool(self._queue or self._processing)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no key is queued or processing, at most ``timeout`` real seconds
        (whatever the queue's clock: a caller's poll); whether it is so."""
        with self._cond:
            return self._idle.wait_for(lambda: not (self._queue or self._processing), timeout)

    @property
    def shutting_down(self) -> bool:
        with self._cond:
            return self._shutting_down

    # -- shutdown -------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Drop queued and delayed keys, stop accepting and handing out new ones, and wake
        every blocked :meth:`get`. Keys being processed may still be marked :meth:`done`."""
        with self._cond:
            self._shutdown_locked()

    def shutdown_with_drain(self, timeout: float) -> bool:
        """Shut down, then wait up to ``timeout`` seconds for in-flight keys to be done.

        Returns whether processing emptied in time.
        """
        with self._cond:
            self._shutdown_locked()
            give_up = self._clock.monotonic() + max(timeout, 0.0)
            while self._processing:
                if self._clock.monotonic() >= give_up:
                    return False
                self._clock.wait_until(self._cond, give_up)
            return True

    # -- internals ------------------------------------------------------------------------

    def _shutdown_locked(self) -> None:
        self._shutting_down = True
        # Queued and delayed keys are dropped, not left to look like pending work: nothing
        # will ever process them, and is_idle() should say so once in-flight work is done.
        self._queue.clear()
        self._dirty.clear()
        self._delayed.clear()
        self._deadlines.clear()
        self._cond.notify_all()

    def _add_locked(self, key: K) -> None:
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        # A key being processed stays out of the queue: done() re-queues it, so it is never
        # handed to a second worker while the first is still on it.
        if key in self._processing:
            return
        self._queue.append(key)
        self._cond.notify()

    def _promote_due_locked(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            deadline, _, key = heapq.heappop(self._delayed)
            # Skip entries superseded by an earlier deadline for the same key (already
            # promoted, or replaced); only the authoritative deadline triggers an add.
            if self._deadlines.get(key) != deadline:
                continue
            del self._deadlines[key]
            self._add_locked(key)
