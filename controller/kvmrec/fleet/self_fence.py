"""Self-fencing: a host that lost its lease destroys its own running HA guests at once.

The lease is known lost at TTL - margin after the last renewal was sent, at least margin
(5 s) before etcd can expire it, and the scheduler waits a fencing window more before it
starts the guests elsewhere (fleet/recovery.py has the arithmetic): by then this host
runs none of them. As Proxmox's watchdog, the fence does not ask etcd anything (it is
what went away) and writes nothing: it acts on what the host already knows (which Domains
are HA, from its reconciles) and on what its libvirt runs, and logs what it did. Sweeps every
second for a few seconds catch a guest a reconcile started just before the loss.

A Domain that is not HA is left running: nothing else will start it, and its host's
status says HostNotReady until the host is back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Protocol

from kvmrec.fleet.scope import Scope
from kvmrec.store.records import StoredObject

log = logging.getLogger(__name__)

SWEEP_EVERY = 1.0  # seconds between sweeps
SWEEPS = 4  # at least: a start in flight at the loss (a few seconds) has ended by the last
PATIENCE = 60  # sweeps at most while libvirt refuses (it drops a client it lost for a while)


class _Live(Protocol):
    @property
    def state(self) -> str: ...


class Destroyer(Protocol):
    """What the fence needs of libvirt (backends/protocols.py's Domains has both)."""

    def get_domain(self, name: str) -> _Live | None: ...

    def destroy_domain(self, name: str) -> None:
        """Power the guest off at once (nothing if it is not running)."""


class SelfFence:
    """Knows this host's HA Domains and destroys them when the lease is lost."""

    def __init__(
        self,
        scope: Scope,
        guests: Destroyer,
        *,
        wait: Callable[[float], object] | None = None,
    ) -> None:
        self._scope = scope
        self._guests = guests
        self._wait = wait or threading.Event().wait
        self._lock = threading.Lock()
        self._ha: set[str] = set()

    def note(self, obj: StoredObject) -> None:
        """Remember whether Domain ``obj`` is HA (told of every object reconciled)."""
        if obj.key.kind != "Domain":
            return
        ha = obj.spec.get("highAvailability") or {}
        with self._lock:
            if ha.get("restart") and not obj.deleting:
                self._ha.add(obj.key.name)
            else:
                self._ha.discard(obj.key.name)

    def ha_here(self) -> list[str]:
        with self._lock:
            known = set(self._ha)
        return sorted(k.name for k in self._scope.placed_here() if k.name in known)

    def known(self) -> list[str]:
        with self._lock:
            return sorted(self._ha)

    def fence(self) -> list[str]:
        """Destroy every HA guest running here, sweep after sweep; the names destroyed.

        Placed here or not: a host that was frozen past its lease may learn that a guest
        was relocated before it learns that its lease is lost, and the copy it still runs
        is then the one that must go. The sweeps go on until one met no error (libvirt
        may have dropped a client that was frozen, and the connection come back later)."""
        destroyed: set[str] = set()
        for sweep in range(1, PATIENCE + 1):
            done, failed = self._sweep(self.known())
            destroyed |= set(done)
            if sweep >= SWEEPS and not failed:
                break
            self._wait(SWEEP_EVERY)
        return sorted(destroyed)

    def _sweep(self, names: Iterable[str]) -> tuple[list[str], bool]:
        """(the guests destroyed, whether any could not be looked at or destroyed)"""
        done, failed = [], False
        for name in names:
            try:
                live = self._guests.get_domain(name)
                if live is None or live.state not in ("running", "paused", "pmsuspended"):
                    continue
                self._guests.destroy_domain(name)
            except Exception as exc:  # libvirt away: the next sweep, and the lock manager
                log.error("fencing: cannot destroy HA guest %s: %s", name, exc)
                failed = True
                continue
            done.append(name)
            log.error("fencing: destroyed HA guest %s (this host's lease is lost)", name)
        return done, failed
