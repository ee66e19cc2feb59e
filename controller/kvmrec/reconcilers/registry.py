"""The kinds kvmrec reconciles, built once for ``run`` and ``plan`` alike.

``build`` makes one reconciler per kind from the backends and the settings; ``Kinds``
answers the service's wiring questions from what each kind declares
(reconcilers/reconciling.py): which reconciler a key goes to, which kinds a Domain can
wait for, which key a backend event names, what a deletion wakes, and which keys a
periodic resync can leave out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from kvmrec.api.kinds import ObjectKey
from kvmrec.backends import host, protocols
from kvmrec.engine.clock import Clock
from kvmrec.reconcilers.dependencies import Dependencies
from kvmrec.reconcilers.domain import DomainReconciler
from kvmrec.reconcilers.network import NetworkReconciler
from kvmrec.reconcilers.ovsbridge import OvsBridgeReconciler
from kvmrec.reconcilers.plans import Step
from kvmrec.reconcilers.reconciling import Done, Reconciler
from kvmrec.reconcilers.snapshot_policy import SnapshotPolicyReconciler
from kvmrec.reconcilers.snapshots import SnapshotReconciler
from kvmrec.store.base import Store
from kvmrec.store.records import StoredObject

AnyReconciler = Reconciler[Any, Any]


class Kinds:
    """The reconcilers by kind, and the wiring their kinds declare."""

    def __init__(self, reconcilers: Sequence[AnyReconciler], dependencies: Dependencies) -> None:
        self.dependencies = dependencies
        self._by_kind = {r.kind: r for r in reconcilers}

    def __iter__(self) -> Iterator[AnyReconciler]:
        return iter(self._by_kind.values())

    def get(self, kind: str) -> AnyReconciler | None:
        return self._by_kind.get(kind)

    def is_dependency(self, kind: str) -> bool:
        """A Domain can wait for objects of ``kind``."""
        r = self._by_kind.get(kind)
        return r is not None and r.of.dependency

    def event_key(self, source: str, name: str) -> tuple[ObjectKey, bool] | None:
        """The key an event of backend ``source`` ("domain", "network", "bridge") about
        ``name`` names, and whether it is queued for an object without a manifest."""
        for r in self._by_kind.values():
            if r.of.events == source:
                return ObjectKey(r.kind, name), r.of.events_of_unmanaged
        return None

    def relisted_by(self, backend: str) -> set[str]:
        """The kinds whose objects are all worth a look when ``backend`` reconnects."""
        return {r.kind for r in self._by_kind.values() if r.of.relisted_by == backend}

    def woken_by_deletion(self, obj: StoredObject) -> list[ObjectKey]:
        r = self._by_kind.get(obj.key.kind)
        return r.of.woken_by_deletion(obj) if r is not None else []

    def stale(self, keys: Iterable[ObjectKey]) -> list[ObjectKey]:
        """Of ``keys``, those a periodic resync must reconcile (a kind may leave out what
        its fingerprints show did not move)."""
        by_kind: dict[str, list[ObjectKey]] = {}
        for key in keys:
            by_kind.setdefault(key.kind, []).append(key)
        stale: list[ObjectKey] = []
        for kind, of_kind in by_kind.items():
            r = self._by_kind.get(kind)
            stale += r.of.stale(of_kind) if r is not None else of_kind
        return stale


def build(
    store: Store,
    clock: Clock,
    hypervisor: protocols.LibvirtHost,
    ovsdb: protocols.OvsBridges,
    *,
    disk_roots: Iterable[str | Path] | None,
    allow_device_disks: bool = False,
    guest: protocols.GuestAgent | None = None,
    stop_grace: float = 60.0,
    on_step: Callable[[ObjectKey, Step], None] | None = None,
    on_done: Done | None = None,
    scope: Callable[[StoredObject], bool] | None = None,
) -> Kinds:
    """Every kind's reconciler. ``on_step``: told of every step acted on (tests);
    ``on_done``: of how every reconcile ended (reconcilers/reconciling.py); ``scope``:
    which objects are this host's (a fleet's hosts share one desired state)."""
    dependencies = Dependencies(
        store, hypervisor.network_active, host.net_device_exists, host.pci_device_exists
    )
    reconcilers: list[AnyReconciler] = [
        DomainReconciler(
            store,
            hypervisor,
            clock,
            dependencies,
            disk_roots=disk_roots,
            allow_device_disks=allow_device_disks,
            guest=guest,
            stop_grace=stop_grace,
            on_step=on_step,
        ),
        NetworkReconciler(store, hypervisor, clock, dependencies, on_step=on_step),
        OvsBridgeReconciler(store, ovsdb, clock, dependencies, on_step=on_step),
        SnapshotReconciler(store, hypervisor, clock, on_step=on_step),
        SnapshotPolicyReconciler(store, hypervisor, clock, on_step=on_step),
    ]
    for reconciler in reconcilers:
        reconciler.on_done = on_done
        reconciler.scope = scope
    return Kinds(reconcilers, dependencies)
