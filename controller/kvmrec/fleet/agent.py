"""One host's membership of a fleet: register, follow the placements, fence, rejoin.

    register --> list placements --> watch objects + placements --> reconcile my share
        ^                                                              |
        +---- lease lost: stop acting, re-register, re-list <----------+

The host registers under a lease (store/etcd/leases.py renews it) and acts only while the
lease holds: ``acting`` is cleared the moment the lease is known lost, before its TTL can
have run out anywhere, and every status write carries the lease in its transaction's
compare, so a host that was cut off can neither act nor overwrite what others wrote. It
never grants itself a new lease silently: rejoining re-registers, re-lists the placements
and queues its whole share before it acts again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime

from kvmrec.api.kinds import ObjectKey
from kvmrec.fleet.scope import Scope
from kvmrec.store.fleet import (
    Change,
    FollowedPlacements,
    HostLeasing,
    Hosts,
    Subscription,
    Watching,
)
from kvmrec.store.fleet_records import HostRecord

log = logging.getLogger(__name__)

REJOIN_RETRY = 2.0  # seconds between attempts to register again


class HostAgent:
    """Keeps one host a member of the fleet and tells the service what to reconcile."""

    def __init__(
        self,
        *,
        scope: Scope,
        describe: Callable[[], HostRecord],
        hosts: Hosts,
        placements: FollowedPlacements,
        watching: Watching,
        lease: HostLeasing,
        prefixes: tuple[str, str],
        revision: Callable[[], int],
        queue: Callable[[ObjectKey], None],
        relist: Callable[[], None],
        now: Callable[[], datetime],
    ) -> None:
        """``describe``: this host's record as it is now (capacity read from libvirt).
        ``prefixes``: the store's (objects, placements) key prefixes, watched.
        ``revision``: the store's current revision. ``queue``: reconcile one key soon;
        ``relist``: reconcile every key (after a rejoin or a lost watch)."""
        self.scope = scope
        self._describe = describe
        self._hosts = hosts
        self._placements = placements
        self._watching = watching
        self._lease = lease
        self._objects_prefix, self._placements_prefix = prefixes
        self._revision = revision
        self._queue = queue
        self._relist = relist
        self._now = now
        self._acting = threading.Event()
        self._stopping = threading.Event()
        self._subscription: Subscription | None = None
        self._rejoining = threading.Lock()
        self._held = False  # a lease was granted once: later joins take a new one
        self.why_not_acting = "not registered yet"

    def acting(self) -> bool:
        """Whether this host may act on libvirt and OVS now."""
        return self._acting.is_set() and not self._lease.lost

    def start(self) -> None:
        """Register and start following; when etcd is not there yet, keep trying in the
        background (the service runs, acting on nothing, until it is)."""
        self._lease.on_lost(self._lost)
        try:
            self._join()
        except Exception as exc:  # etcd or libvirt not there yet: retried the same way
            log.error("joining the fleet as %s: %s; will keep trying", self.scope.name, exc)
            self._rejoin_in_background()

    def stop(self) -> None:
        self._stopping.set()
        self._acting.clear()
        if self._subscription is not None:
            self._subscription.stop()
        self._lease.close()

    # -- joining -------------------------------------------------------------------------

    def _join(self) -> None:
        if self._held:
            self._lease.reacquire()
        else:
            self._lease.acquire()
            self._held = True
        self._hosts.register(self._describe(), self._now())
        revision = self._revision()
        self._list_placements()
        if self._subscription is None:
            self._subscription = self._watching.watch(
                [self._objects_prefix, self._placements_prefix],
                revision + 1,
                self._changes,
                self._relisted,
            )
        self._acting.set()
        self.why_not_acting = ""
        log.info(
            "host %s joined the fleet (%d Domains placed here)",
            self.scope.name,
            len(self.scope.placed_here()),
        )
        self._relist()

    def _list_placements(self) -> None:
        placed = self._placements.placements("Domain")
        self.scope.replace_placements({k: p.placement.host for k, p in placed.items()})

    def _lost(self) -> None:
        """The lease could not be renewed in time: stop acting now, then rejoin."""
        if self._stopping.is_set():
            return
        self._acting.clear()
        self.why_not_acting = "the host lease was lost (etcd unreachable?)"
        log.error(
            "host %s lost its lease: acting on nothing until it has registered again",
            self.scope.name,
        )
        self._rejoin_in_background()

    def _rejoin_in_background(self) -> None:
        threading.Thread(target=self._rejoin, name="fleet-rejoin", daemon=True).start()

    def _rejoin(self) -> None:
        if not self._rejoining.acquire(blocking=False):
            return  # one rejoin at a time
        try:
            while not self._stopping.is_set():
                try:
                    self._join()
                    return
                except Exception as exc:  # etcd or libvirt away: try again
                    log.warning("host %s: registering again: %s", self.scope.name, exc)
                    self._stopping.wait(REJOIN_RETRY)
        finally:
            self._rejoining.release()

    # -- following -----------------------------------------------------------------------

    def _changes(self, changes: Sequence[Change]) -> None:
        for change in changes:
            key = _key_after(change.key, self._objects_prefix)
            if key is not None:
                # A Domain placed elsewhere is not this host's to look at; once it is placed
                # here, the placement's own change queues it.
                if key.kind != "Domain" or self.scope.placed_here_now(key):
                    self._queue(key)
                continue
            placed = self._placements.placement_change(change)
            if placed is None:
                continue
            key, host = placed
            before = self.scope.set_placement(key, host)
            if self.scope.name in (before, host):
                self._queue(key)

    def _relisted(self, prefix: str, _revision: int) -> None:
        """Changes under ``prefix`` were compacted away before the watch saw them."""
        if prefix == self._placements_prefix:
            self._list_placements()
        self._relist()


def _key_after(key: str, prefix: str) -> ObjectKey | None:
    if not key.startswith(prefix):
        return None
    kind, _, name = key[len(prefix) :].strip("/").partition("/")
    return ObjectKey(kind, name) if kind and name and "/" not in name else None
