"""A lease kept alive in the background, that knows when it can no longer be trusted.

etcd deletes a lease's keys once it has not been renewed for its TTL. The holder must stop
acting *before* that, on every clock: it counts the TTL from the moment it *sent* its last
successful renewal (the server restarted the TTL no earlier than that) on a monotonic
clock, and gives up a safety margin ahead of the end. A renewal answered with TTL <= 0 or
"lease not found" loses it at once. Once lost, ``guards`` raise Fenced and the ``on_lost``
callbacks run once; the lease is never replaced silently: ``reacquire`` grants a new one,
and the holder re-registers and re-reads before it acts again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kvmrec.store.etcd.fencing import Fenced
from kvmrec.store.etcd.gateway import EtcdError, EtcdUnavailable, Gateway, compare

log = logging.getLogger(__name__)

TTL = 15  # seconds etcd keeps the keys of a lease that is not renewed
RENEW_EVERY = 5.0  # three renewals per TTL: one lost request costs nothing
MARGIN = 5.0  # stop acting this long before the TTL could be over anywhere


class HostLease:
    """A lease guarding ``key`` (the key the holder puts on it): a Fence.

    ``acquire`` grants it and starts renewing; ``guards`` compares ``key``'s lease."""

    def __init__(
        self,
        gateway: Gateway,
        key: bytes,
        *,
        ttl: int = TTL,
        renew_every: float = RENEW_EVERY,
        margin: float = MARGIN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if margin >= ttl or renew_every >= ttl - margin:
            raise ValueError("a lease must be renewed, with its margin, within its TTL")
        # Its own connections, with a timeout short enough that a hung renewal leaves time
        # for the next one before the deadline.
        self._gateway = Gateway(gateway.endpoints, timeout=min(gateway.timeout, renew_every))
        self.key = key
        self.ttl = ttl
        self.renew_every = renew_every
        self.margin = margin
        self._clock = clock
        self._cond = threading.Condition()
        self._id = 0
        self._deadline = 0.0  # on the monotonic clock: trusted until then
        self._lost = True
        self._stopped = False
        self._generation = 0  # which grant the threads work for
        self._callbacks: list[Callable[[], None]] = []

    # -- the Fence ---------------------------------------------------------------------

    def guards(self) -> Sequence[Mapping[str, Any]]:
        return [compare(self.key, "LEASE", self.id)]

    @property
    def id(self) -> int:
        """The lease id; Fenced if it is lost (or was never granted)."""
        with self._cond:
            self._check_deadline()
            if self._lost:
                raise Fenced(f"the lease of {self.key.decode()} is lost")
            return self._id

    @property
    def lost(self) -> bool:
        with self._cond:
            self._check_deadline()
            return self._lost

    def remaining(self) -> float:
        """Seconds the holder may still act (0 once lost)."""
        with self._cond:
            self._check_deadline()
            return 0.0 if self._lost else self._deadline - self._clock()

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (once per grant, from a background thread) when it is lost."""
        self._callbacks.append(callback)

    # -- life --------------------------------------------------------------------------

    def acquire(self) -> int:
        """Grant the lease and keep it renewed; returns its id."""
        sent = self._clock()
        try:
            lease = self._gateway.grant(self.ttl)
        finally:
            self._gateway.close()  # the caller's connection: the renewals have their own
        with self._cond:
            self._generation += 1
            generation = self._generation
            self._id, self._lost, self._stopped = lease, False, False
            self._deadline = sent + self.ttl - self.margin
            self._cond.notify_all()
        for target, name in ((self._renew, "renew"), (self._watchdog, "deadline")):
            thread = threading.Thread(
                target=target, args=(generation,), name=f"lease-{name}", daemon=True
            )
            thread.start()
        return lease

    def reacquire(self) -> int:
        """After a loss: a new lease (the holder must register and re-read before acting)."""
        with self._cond:
            old, self._lost = self._id, True
            self._generation += 1
            self._cond.notify_all()
        self._revoke(old)
        return self.acquire()

    def close(self) -> None:
        """Stop renewing and revoke the lease (its keys go at once)."""
        with self._cond:
            lease, was_lost = self._id, self._lost
            self._stopped, self._lost = True, True
            self._generation += 1
            self._cond.notify_all()
        if not was_lost:
            self._revoke(lease)
        self._gateway.close()

    def _revoke(self, lease: int) -> None:
        if not lease:
            return
        try:
            self._gateway.revoke(lease)
        except EtcdError as exc:
            log.info("cannot revoke lease %x (it will expire): %s", lease, exc)
        finally:
            self._gateway.close()

    # -- background --------------------------------------------------------------------

    def _renew(self, generation: int) -> None:
        try:
            self._renew_until_lost(generation)
        finally:
            self._gateway.close()  # this thread's connection

    def _renew_until_lost(self, generation: int) -> None:
        next_at = self._clock() + self.renew_every
        while True:
            with self._cond:
                while self._current(generation) and self._clock() < next_at:
                    self._cond.wait(next_at - self._clock())
                if not self._current(generation):
                    return
                lease = self._id
            sent = self._clock()
            try:
                ttl = self._gateway.keepalive(lease)
            except EtcdUnavailable as exc:
                log.warning("cannot renew lease %x: %s", lease, exc)
                next_at = self._clock() + 1.0  # retry soon; the deadline decides
                continue
            except EtcdError as exc:  # "requested lease not found"
                log.warning("lease %x refused: %s", lease, exc)
                ttl = 0
            with self._cond:
                if not self._current(generation):
                    return
                if ttl <= 0:
                    self._lose("etcd says it expired")
                    return
                self._deadline = max(self._deadline, sent + ttl - self.margin)
                self._cond.notify_all()
            next_at = sent + self.renew_every

    def _watchdog(self, generation: int) -> None:
        # Apart from the renewals: a renewal stuck on a dead endpoint must not delay this.
        with self._cond:
            while self._current(generation):
                left = self._deadline - self._clock()
                if left <= 0:
                    self._check_deadline()
                    return
                self._cond.wait(left)

    def _current(self, generation: int) -> bool:
        return generation == self._generation and not self._lost and not self._stopped

    def _check_deadline(self) -> None:
        if not self._lost and self._clock() >= self._deadline:
            self._lose(f"not renewed for {self.ttl - self.margin:g} s")

    def _lose(self, why: str) -> None:
        # Called with the lock held; the callbacks run on a thread of their own so that
        # they may call back into the lease.
        self._lost = True
        self._cond.notify_all()
        log.warning("lease %x of %s lost: %s", self._id, self.key.decode(), why)
        callbacks = list(self._callbacks)
        if callbacks:
            threading.Thread(
                target=_run_all, args=(callbacks,), name="lease-lost", daemon=True
            ).start()


def _run_all(callbacks: Sequence[Callable[[], None]]) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:
            log.exception("a lease-lost callback failed")
