"""Per-key exponential backoff for failed reconciles.

When a reconcile fails, its key goes back into the queue after a delay that doubles with each
consecutive failure of that key, up to a cap, and resets as soon as the key reconciles
successfully. This is client-go's ``ItemExponentialFailureRateLimiter``, retuned for libvirt:
client-go starts at 5 ms because API-server writes are cheap and conflicts clear at once; a
failed ``virDomainCreate`` or volume clone is neither, so we start at a second and cap at
minutes.

Jitter is added on top of the exponential delay. Failures are correlated: when libvirtd
restarts, every domain's reconcile fails in the same second, and without jitter they would all
retry in the same second again, forever in lockstep. A random factor in
``[1 - jitter, 1 + jitter]`` spreads them out. Because jitter multiplies the already-capped
delay, the largest possible delay is ``cap * (1 + jitter)``; the cap bounds the *typical*
delay, the jitter bounds how far any single retry strays from it.

Failure counts are per key and never decay with time, only with :meth:`Backoff.forget`. A key
that failed ten times an hour ago and fails again now still waits the capped delay: nothing in
between proved the cause went away. The worker pool calls ``forget`` on every success and on
every permanent error (which is not retried at all).
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    import random

__all__ = ["Backoff", "BackoffSettings"]

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class BackoffSettings:
    """How fast retries slow down. Delays are in seconds."""

    base: float = 1.0
    """Delay after the first failure. A second is long enough for what usually causes a first
    failure to clear (another libvirt job holding the domain's job lock, a bridge port that
    OVS has not created yet) and short enough that a transient blip is invisible to users."""

    cap: float = 300.0
    """Ceiling of the exponential part. Five minutes matches the default resync period: a
    broken object is retried about as often as everything is re-checked anyway, so a fix made
    outside kvmrec (a disk restored, a bridge created by hand) is noticed within the same bound,
    while a permanently broken object costs libvirt a call every few minutes, not every second."""

    factor: float = 2.0
    """Growth per consecutive failure. Doubling reaches the cap after nine failures (1, 2, 4,
    ... 256, 300), about eight minutes of retrying in all: quick help for short outages, then
    a calm steady state for long ones."""

    jitter: float = 0.2
    """Relative random spread applied to every delay, ``[1 - jitter, 1 + jitter]``. Twenty per
    cent is enough to de-synchronise a herd of keys that failed together (a libvirtd restart)
    within a few retries, while keeping each delay predictable to within a fifth for whoever
    reads the logs."""

    def __post_init__(self) -> None:
        if self.base <= 0:
            raise ValueError(f"backoff base must be positive, got {self.base!r}")
        if self.cap < self.base:
            raise ValueError(f"backoff cap {self.cap!r} is below base {self.base!r}")
        if self.factor < 1:
            raise ValueError(f"backoff factor must be at least 1, got {self.factor!r}")
        # jitter < 1 keeps every delay strictly positive; a zero delay would turn a failing
        # key into a hot loop.
        if not 0 <= self.jitter < 1:
            raise ValueError(f"backoff jitter must be in [0, 1), got {self.jitter!r}")


class Backoff(Generic[K]):
    """Per-key failure counts and the delays they imply. Safe to share between threads.

    ``rng`` is injectable so tests can seed it and assert exact jittered delays.
    """

    def __init__(
        self, settings: BackoffSettings | None = None, *, rng: random.Random | None = None
    ) -> None:
        self.settings = settings if settings is not None else BackoffSettings()
        if rng is None:
            import random  # here: the settings' reader (every command) needs no generator

            rng = random.Random()
        self._rng = rng
        self._failures: dict[K, int] = {}
        # One lock guards both the counts and the rng: random.Random's state is not
        # guaranteed to stay consistent under concurrent calls, and workers fail concurrently.
        self._lock = threading.Lock()

    def next_delay(self, key: K) -> float:
        """Record one more failure of ``key`` and return how long to wait before retrying it.

        The n-th consecutive failure (counting from 0) waits
        ``min(base * factor**n, cap) * uniform(1 - jitter, 1 + jitter)``.
        """
        s = self.settings
        with self._lock:
            n = self._failures.get(key, 0)
            self._failures[key] = n + 1
            try:
                delay = min(s.base * s.factor**n, s.cap)
            except OverflowError:
                # factor**n leaves the float range after ~1000 doublings; by then the delay
                # has long been at the cap, and a key failing that often must not crash the
                # worker that reports it.
                delay = s.cap
            if s.jitter:
                delay *= self._rng.uniform(1 - s.jitter, 1 + s.jitter)
            return delay

    def failures(self, key: K) -> int:
        """Consecutive failures of ``key`` since it was last forgotten."""
        with self._lock:
            return self._failures.get(key, 0)

    def forget(self, key: K) -> None:
        """Reset ``key``: its next failure waits only ``base`` again. Unknown keys are fine."""
        with self._lock:
            self._failures.pop(key, None)
