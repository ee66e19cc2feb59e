"""Time, as the engine sees it.

The engine measures two kinds of time. *Monotonic* time orders deadlines: when a delayed key
becomes due, when a backoff expires, how long a drain may take. It never jumps when NTP or an
operator sets the system clock, so a key is never requeued an hour early or late. *Wall* time
is only for humans and records: condition ``lastTransitionTime``, event timestamps, history.
It is always timezone-aware UTC, because a naive datetime in a status record is ambiguous the
moment it leaves the host.

Anything in the engine that waits does so through the clock, with :meth:`Clock.wait_until`,
rather than calling ``Condition.wait`` with a number of seconds. That is the whole trick that
makes the engine testable in zero wall time, in the manner of kopf's ``looptime``:

- :class:`SystemClock` turns the deadline into a real timed ``Condition.wait``.
- :class:`FakeClock` never sleeps on a timer. A waiter blocks until someone notifies its
  condition or until a test calls :meth:`FakeClock.advance` past its deadline; ``advance``
  wakes every waiter so it can look at the new time. A queue holding a key due in five fake
  minutes therefore costs a test one ``advance(300)`` and no real waiting at all.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock"]


class Clock(Protocol):
    """The source of time for the engine; see the module docstring."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards; only differences are meaningful."""
        ...

    def wall(self) -> datetime:
        """The current time of day as a timezone-aware UTC datetime."""
        ...

    def wait_until(self, condition: threading.Condition, deadline: float | None) -> None:
        """Block on ``condition`` until notified or until :meth:`monotonic` reaches ``deadline``.

        The caller must hold ``condition``, exactly as for ``Condition.wait``. ``None`` waits for
        a notification only. Like ``Condition.wait`` this may return early or spuriously, so
        callers re-check their predicate in a loop.
        """
        ...


class SystemClock:
    """The real clocks of the host: ``time.monotonic`` and ``datetime.now(UTC)``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> datetime:
        return datetime.now(UTC)

    def wait_until(self, condition: threading.Condition, deadline: float | None) -> None:
        if deadline is None:
            condition.wait()
            return
        remaining = deadline - time.monotonic()
        # A deadline already in the past must not block: the caller re-checks and finds
        # its item due. Condition.wait(0) would also return, but only after a lock dance.
        if remaining > 0:
            condition.wait(remaining)


class FakeClock:
    """A clock that moves only when a test calls :meth:`advance`.

    Both readings move together, so ``wall() - start_wall == monotonic() - start_monotonic``
    always holds; tests can reason about a single timeline.
    """

    def __init__(
        self,
        *,
        monotonic: float = 1000.0,
        wall: datetime = datetime(2024, 1, 1, tzinfo=UTC),
    ) -> None:
        # The monotonic default is deliberately not zero, so code that confuses "a deadline"
        # with "a duration" or treats 0.0 as "unset" shows up in tests.
        if wall.tzinfo is None or wall.utcoffset() is None:
            raise ValueError("FakeClock wall time must be timezone-aware")
        self._lock = threading.Lock()
        self._monotonic = monotonic
        self._wall = wall.astimezone(UTC)
        # Conditions with a thread currently blocked in wait_until, counted because several
        # worker threads usually wait on the same queue condition.
        self._waiters: Counter[threading.Condition] = Counter()

    def monotonic(self) -> float:
        with self._lock:
            return self._monotonic

    def wall(self) -> datetime:
        with self._lock:
            return self._wall

    def advance(self, seconds: float) -> None:
        """Move both clocks forward and wake every waiter so it re-checks its deadline."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go backwards ({seconds!r} s)")
        with self._lock:
            self._monotonic += seconds
            self._wall += timedelta(seconds=seconds)
            # Taking the snapshot in the same critical section as the time update closes the
            # lost-wakeup gap: a waiter that registers after this block sees the new time in
            # wait_until's own check; one that registered before is in the snapshot.
            waiting = list(self._waiters)
        for condition in waiting:
            # The waiter holds the condition until it is parked inside Condition.wait, so
            # acquiring it here cannot slip a notification in before the waiter listens.
            with condition:
                condition.notify_all()

    def wait_until(self, condition: threading.Condition, deadline: float | None) -> None:
        with self._lock:
            if deadline is not None and self._monotonic >= deadline:
                return
            self._waiters[condition] += 1
        try:
            # No timeout: fake time passes only in advance(), which notifies us.
            condition.wait()
        finally:
            with self._lock:
                self._waiters[condition] -= 1
                if self._waiters[condition] <= 0:
                    del self._waiters[condition]
