"""Leader election on etcd, with controller-runtime's timings (lease 15 s, renew deadline
10 s, retry 2 s).

A candidate reads ``P/election/NAME``; when no one holds it, it grants a lease and
campaigns with one transaction: create the key on its lease if still absent. Then it
watches the key, and looks again when it changes (and every lease duration, whatever the
watch says): a fleet's followers cost etcd a quiet watch each, not a read every retry
period. The leader renews its lease every retry period. The key goes with the leader's
lease, so a dead leader is replaced once its lease expires (15 s), as soon as the deletion
is seen. A leader that could not renew for the renew deadline stops leading at once
(callback), 5 s before etcd could let another candidate in. The leader is also a Fence:
its writes compare that the election key is still on its lease.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kvmrec.store.etcd.fencing import Fenced
from kvmrec.store.etcd.gateway import (
    EtcdError,
    EtcdUnavailable,
    Gateway,
    compare,
    delete_op,
    put_op,
)
from kvmrec.store.etcd.leases import HostLease
from kvmrec.store.etcd.watch import SupervisedWatch
from kvmrec.store.fleet import Change

log = logging.getLogger(__name__)

LEASE_DURATION = 15
RENEW_DEADLINE = 10.0
RETRY_PERIOD = 2.0


class LeaderElection:
    """One candidate for the leadership ``name``, known to others as ``identity``."""

    def __init__(
        self,
        gateway: Gateway,
        name: str,
        identity: str,
        prefix: str = "/kvmrec",
        *,
        lease_duration: int = LEASE_DURATION,
        renew_deadline: float = RENEW_DEADLINE,
        retry_period: float = RETRY_PERIOD,
        on_started_leading: Callable[[], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
    ) -> None:
        self._gateway = gateway
        self.key = f"{prefix}/election/{name}".encode()
        self.identity = identity
        self._retry = retry_period
        self._recheck = float(lease_duration)  # between looks while the watch is quiet
        self._lease = HostLease(
            gateway,
            self.key,
            ttl=lease_duration,
            renew_every=retry_period,
            margin=lease_duration - renew_deadline,
        )
        self._lease.on_lost(self._lost)
        self._started = on_started_leading
        self._stopped_cb = on_stopped_leading
        self._cond = threading.Condition()
        self._transition = threading.Lock()  # callbacks in the order of the changes
        self._leading = False
        self._stopping = False
        self._changed = False  # the watch saw the key change since the last look
        self._watch: SupervisedWatch | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="election", daemon=True)
        self._thread.start()

    def is_leader(self) -> bool:
        with self._cond:
            return self._leading and not self._lease.lost

    def leader(self) -> str | None:
        kv = self._gateway.get(self.key)
        return kv.value.decode() if kv else None

    def guards(self) -> Sequence[Mapping[str, Any]]:
        """The Fence of the leader: Fenced while not leading."""
        if not self.is_leader():
            raise Fenced(f"{self.identity} does not lead {self.key.decode()}")
        return self._lease.guards()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        if self._watch is not None:
            self._watch.stop()
        if self.is_leader():
            try:
                self._gateway.txn(self._lease.guards(), [delete_op(self.key)])
            except (EtcdError, Fenced) as exc:
                log.info("cannot resign (the lease expires instead): %s", exc)
            self._gateway.close()  # this thread's connection
        self._lease.close()
        self._set_leading(False)

    def _run(self) -> None:
        try:
            self._campaign()
        finally:
            self._gateway.close()  # this thread's connection

    def _campaign(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
            wait = self._recheck
            try:
                self._attempt()
            except (EtcdUnavailable, Fenced) as exc:
                log.info("election %s: %s", self.key.decode(), exc)
                wait = self._retry
            except EtcdError as exc:
                log.warning("election %s: %s", self.key.decode(), exc)
                wait = self._retry
            if self._watch is None:
                wait = self._retry
            with self._cond:
                if not self._stopping and not self._changed:
                    self._cond.wait(wait)

    def _attempt(self) -> None:
        with self._cond:
            self._changed = False
        found = self._gateway.range(self.key)
        if self._watch is None:
            # From the revision of that read: a change after it wakes the next look.
            self._watch = SupervisedWatch(
                self._gateway, [self.key.decode()], found.revision + 1, self._seen, self._relisted
            )
        held = found.kvs[0] if found.kvs else None
        mine = not self._lease.lost and held is not None and held.lease == self._lease.id
        if self.is_leader() and not mine:  # deleted or taken by hand
            self._set_leading(False)
        if mine:  # leading, or won by a transaction whose answer was lost
            self._set_leading(True)
            return
        if held is not None:
            # Someone else leads: wait for the key to go without renewing a lease meanwhile
            # (a follower costs etcd its watch of the key, no writes).
            if not self._lease.lost:
                self._lease.close()
            return
        if self._lease.lost:
            self._lease.reacquire()  # a fresh candidacy: nothing was done under the old one
        result = self._gateway.txn(
            [compare(self.key, "CREATE", 0)],
            [put_op(self.key, self.identity.encode(), self._lease.id)],
        )
        if result.succeeded:
            self._set_leading(True)

    def _seen(self, changes: Sequence[Change]) -> None:
        self._wake()

    def _relisted(self, prefix: str, revision: int) -> None:
        self._wake()  # changes were compacted away: look again

    def _wake(self) -> None:
        with self._cond:
            self._changed = True
            self._cond.notify_all()

    def _lost(self) -> None:
        log.warning("election %s: lease lost, no longer leading", self.key.decode())
        self._set_leading(False)
        self._wake()

    def _set_leading(self, leading: bool) -> None:
        with self._transition:
            with self._cond:
                if self._leading == leading:
                    return
                self._leading = leading
            callback = self._started if leading else self._stopped_cb
            log.info(
                "%s %s leading %s",
                self.identity,
                "started" if leading else "stopped",
                self.key.decode(),
            )
            if callback is not None:
                try:
                    callback()
                except Exception:
                    log.exception("an election callback failed")
