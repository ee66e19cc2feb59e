"""Self-fencing: a host that lost its lease destroys its own running HA guests at once.

The lease is known lost at TTL - margin after the last renewal was sent, at least margin
(5 s) before etcd can expire it, and the scheduler waits a fencing window more before it
starts the guests elsewhere (fleet/recovery.py has the arithmetic): by then this host
runs none of them. As Proxmox's watchdog, the fence does not ask etcd anything (it is
what went away) and writes nothing: it acts on what the host already knows, the Domains
placed on it and which of them are HA, and says what it did in the log. A second sweep a
few seconds on catches a guest a reconcile started just before the loss.

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

SECOND_SWEEP = 3.0  # seconds after the first: a start in flight at the loss has ended


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
        second_sweep: float = SECOND_SWEEP,
        wait: Callable[[float], object] | None = None,
    ) -> None:
        self._scope = scope
        self._guests = guests
        self._second_sweep = second_sweep
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

    def fence(self) -> list[str]:
        """Destroy every HA guest placed here, twice; the names destroyed."""
        destroyed = self._sweep(self.ha_here())
        self._wait(self._second_sweep)
        return sorted(set(destroyed) | set(self._sweep(self.ha_here())))

    def _sweep(self, names: Iterable[str]) -> list[str]:
        done = []
        for name in names:
            try:
                live = self._guests.get_domain(name)
                if live is None or live.state not in ("running", "paused", "pmsuspended"):
                    continue
                self._guests.destroy_domain(name)
            except Exception as exc:  # not defined here, libvirt away: the lock manager's turn
                log.error("fencing: cannot destroy HA guest %s: %s", name, exc)
                continue
            done.append(name)
            log.error("fencing: destroyed HA guest %s (this host's lease is lost)", name)
        return done
