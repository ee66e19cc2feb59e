"""The safety net of a level-triggered design: every few minutes :class:`Resync` re-adds
every known key, so drift that produced no event (a lost libvirt event during a reconnect,
a change made with ``virsh`` that we do not watch) is still corrected.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

from kvmrec.engine import queue as queues

__all__ = ["Resync"]

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


class Resync(Generic[K]):
    """Re-add every known key to the queue periodically, and on :meth:`trigger`.

    The first periodic resync happens one period after :meth:`start`; the sources' initial
    listing covers startup, and a caller that wants one at once calls :meth:`trigger`.
    """

    def __init__(
        self,
        queue: queues.WorkQueue[K],
        keys: Callable[[], Iterable[K]],
        *,
        period: float = 300.0,
        jitter: float = 0.1,
        rng: random.Random | None = None,
        name: str = "kvmrec-resync",
    ) -> None:
        # period: five minutes bounds how long unnoticed drift can last, at the cost of one
        # observe per object per period, which for libvirt is a few cheap XML reads.
        # jitter: +/-10 % keeps hosts started together (after a power cut, by the same
        # config management run) from hitting shared infrastructure in lockstep forever.
        if period <= 0:
            raise ValueError(f"resync period must be positive, got {period!r}")
        if not 0 <= jitter < 1:
            raise ValueError(f"resync jitter must be in [0, 1), got {jitter!r}")
        self.queue = queue
        self._keys = keys
        self._period = period
        self._jitter = jitter
        self._rng = rng if rng is not None else random.Random()
        self._name = name
        # One event for "wake up" (trigger or stop), a separate one for "stop", so that a
        # trigger can never be mistaken for a stop and vice versa.
        self._wake = threading.Event()
        self._stopping = threading.Event()
        # Why the thread was woken, when it was not to stop: a trigger resyncs, a new period
        # only restarts the wait (see set_period).
        self._flags_lock = threading.Lock()
        self._triggered = False
        self._rearmed = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self._name} already started")
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def trigger(self) -> None:
        """Resync as soon as possible; triggers that arrive before it runs are merged."""
        with self._flags_lock:
            self._triggered = True
        self._wake.set()

    @property
    def period(self) -> float:
        return self._period

    def set_period(self, period: float) -> None:
        """Resync every ``period`` seconds from now on (a configuration reload).

        The wait in progress is cut short and started again with the new period, counted
        from now: going from an hour to a minute takes effect within the minute, not the
        hour. It does not resync by itself.
        """
        if period <= 0:
            raise ValueError(f"resync period must be positive, got {period!r}")
        with self._flags_lock:
            self._period = period
            self._rearmed = True
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop at once, even mid-wait; returns whether the thread exited within ``timeout``."""
        self._stopping.set()
        self._wake.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def resync(self) -> None:
        """Add every key now, in the calling thread."""
        try:
            for key in self._keys():
                self.queue.add(key)
        except Exception:
            # The store may be briefly unavailable; the next period tries again, and the
            # keys added before the failure stay added.
            log.exception("resync: listing keys failed")

    def _run(self) -> None:
        while not self._stopping.is_set():
            # Event.wait: idle at zero CPU until the period elapses, a trigger, or stop.
            woken = self._wake.wait(self._next_delay())
            # Cleared before resyncing, so a trigger arriving during the resync causes
            # another one rather than being swallowed.
            self._wake.clear()
            if self._stopping.is_set():
                return
            with self._flags_lock:
                only_rearmed = self._rearmed and not self._triggered
                self._rearmed = self._triggered = False
            if woken and only_rearmed:
                continue  # a new period: wait it out from now
            self.resync()

    def _next_delay(self) -> float:
        with self._flags_lock:
            period = self._period
        return period * self._rng.uniform(1 - self._jitter, 1 + self._jitter)
