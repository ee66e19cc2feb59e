"""``EtcdFleetView``: a fleet's hosts, placements and objects, for commands that only read.

``kvmrec hosts`` must never take part in the fleet: it grants no lease, registers nothing
and writes nothing, so it reads through an ``EtcdStore`` opened read-only and the hosts'
and placements' readers built without a lease or a fence (the only way they could write).
etcd's failures come back as StoreError naming the endpoint, as the store's own do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kvmrec.api.objects import ObjectKey
from kvmrec.store.fleet_records import HostRecord, Placement
from kvmrec.store.records import StoredObject

from .hosts import EtcdHosts
from .placements import EtcdPlacements
from .store import EtcdStore


class EtcdFleetView:
    """The fleet under ``store``'s prefix (store/fleet.py's ``FleetView``)."""

    def __init__(self, store: EtcdStore) -> None:
        if not store.client.read_only:
            raise ValueError("a fleet view reads a store opened read-only")
        self._store = store
        etcd = store.client
        self._hosts = EtcdHosts(etcd.gateway, etcd.layout.prefix)
        self._placements = EtcdPlacements(etcd.gateway, etcd.layout.prefix)

    def hosts(self) -> Sequence[HostRecord]:
        return self._store.client.call(self._hosts.hosts)

    def placements(self) -> Mapping[ObjectKey, Placement]:
        placed = self._store.client.call(self._placements.placements)
        return {key: entry.placement for key, entry in placed.items()}

    def list(self, kind: str | None = None) -> Sequence[StoredObject]:
        return self._store.list(kind)

    def close(self) -> None:
        self._store.close()
