"""``EtcdFleet``: a host's lease, the hosts, placements, watch and election on one store.

Built from the host's ``EtcdStore`` and sharing its connections: the lease becomes the
store's fence, so from then on every write the host makes, status or placement, carries
the lease in its transaction's compare. ``statuses`` is the fleet-wide view the scheduler
reads and writes through: any host's status of any object, under the same fence.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from kvmrec import logs
from kvmrec.api.objects import ObjectKey
from kvmrec.store import codec as store_codec
from kvmrec.store.fleet import Move
from kvmrec.store.records import Status, StoredObject

from . import codec
from .client import Conflict
from .election import LeaderElection
from .gateway import delete_op, put_op
from .hosts import EtcdHosts
from .leases import HostLease
from .migrations import EtcdMigrations
from .placements import EtcdPlacements, host_registered, placement_value
from .store import EtcdStore
from .watch import EtcdWatching


class EtcdFleet:
    """The fleet parts of host ``host`` (store/fleet.py's ``FleetParts``)."""

    def __init__(self, store: EtcdStore, host: str, *, shared_kinds: frozenset[str]) -> None:
        etcd = store.client
        gateway, prefix = etcd.gateway, etcd.layout.prefix
        self._gateway, self._prefix = gateway, prefix
        self._lease = HostLease(gateway, EtcdHosts(gateway, prefix).live_key(host))
        etcd.fence = self._lease
        etcd.shared_kinds = shared_kinds
        self._hosts = EtcdHosts(gateway, prefix, self._lease)
        self._placements = EtcdPlacements(
            gateway, prefix, fence=self._lease, events=store.write_with_events_of
        )
        self._migrations = EtcdMigrations(gateway, prefix, fence=self._lease)
        self._watching = EtcdWatching(gateway)
        self._statuses = _FleetView(store)

    @property
    def hosts(self) -> EtcdHosts:
        return self._hosts

    @property
    def placements(self) -> EtcdPlacements:
        return self._placements

    @property
    def migrations(self) -> EtcdMigrations:
        return self._migrations

    @property
    def watching(self) -> EtcdWatching:
        return self._watching

    @property
    def lease(self) -> HostLease:
        return self._lease

    @property
    def statuses(self) -> _FleetView:
        return self._statuses

    @property
    def objects_prefix(self) -> str:
        return f"{self._prefix}/objects/"

    @property
    def placements_prefix(self) -> str:
        return f"{self._prefix}/placements/"

    @property
    def hosts_prefix(self) -> str:
        return f"{self._prefix}/hosts/"

    @property
    def migrations_prefix(self) -> str:
        return f"{self._prefix}/migrations/"

    def election(self, name: str, identity: str) -> LeaderElection:
        return LeaderElection(self._gateway, name, identity, self._prefix)

    def revision(self) -> int:
        return self._gateway.range(f"{self._prefix}/".encode(), count_only=True, limit=1).revision


class _FleetView:
    """Every host's statuses, written under the host's fence."""

    def __init__(self, store: EtcdStore) -> None:
        self._store = store
        self._views: dict[str | None, EtcdStore] = {}

    def _view(self, host: str | None) -> EtcdStore:
        if host not in self._views:
            self._views[host] = self._store.scoped(host)
        return self._views[host]

    def list(self, kind: str | None = None) -> Sequence[StoredObject]:
        return self._view(None).list(kind)

    def host_statuses(
        self, key: ObjectKey | None = None
    ) -> Sequence[tuple[ObjectKey, str | None, Status]]:
        return self._view(None).host_statuses(key)

    def record_for(
        self,
        host: str | None,
        key: ObjectKey,
        status: Status,
        events: Sequence[tuple[str, str, str]],
        now: datetime,
    ) -> None:
        view = self._view(host)
        view.get_status(key)  # the compare of the write is against what is there now
        view.record(key, status, events, now)

    def forget_status(self, key: ObjectKey, host: str | None) -> None:
        self._view(host).forget_status(key)

    def relocate(
        self,
        key: ObjectKey,
        move: Move,
        status: Status,
        event: tuple[str, str, str],
        now: datetime,
    ) -> bool:
        source, target, reason, revision = move
        view = self._view(None)
        etcd = view.client
        layout = etcd.layout
        placement, fleet, old = (
            layout.placement(key),
            layout.status(key, None),
            layout.status(key, source),
        )
        read = etcd.read(fleet)
        body = store_codec.status_body(status).encode()
        compares = [
            etcd.expect(placement, revision),
            host_registered(layout.prefix, target),
            etcd.expect(fleet, read.mod_revision if read else 0),
        ]
        ops = [put_op(placement, placement_value(target, reason, now)), put_op(fleet, body)]
        try:
            done = view.write_with_events(
                compares, [*ops, delete_op(old)], key, [codec.event_value(key, *event, now)]
            )
        except Conflict:
            etcd.forget([fleet, old])
            return False
        etcd.remember({fleet: body, old: None}, done)
        logs.event(key, *event)
        return True

    def add_event(
        self, key: ObjectKey | None, type_: str, reason: str, message: str, now: datetime
    ) -> None:
        self._view(None).add_event(key, type_, reason, message, now)

    def remove(self, key: ObjectKey) -> bool:
        return self._view(None).remove(key)


class EtcdControl:
    """An operator's view of the fleet in ``store`` (store/fleet.py's ``FleetControl``):
    its writes carry no host's fence."""

    def __init__(self, store: EtcdStore) -> None:
        gateway, prefix = store.client.gateway, store.client.layout.prefix
        self.store = store
        self.hosts = EtcdHosts(gateway, prefix)
        self.placements = EtcdPlacements(gateway, prefix)
        self.migrations = EtcdMigrations(gateway, prefix)

    def close(self) -> None:
        self.store.close()
