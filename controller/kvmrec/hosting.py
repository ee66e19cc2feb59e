"""A service that is one host of a fleet: its agent and its candidacy for the scheduler.

``run --store etcd://... --host NAME`` gives the service a :class:`Membership` instead of a
manifest directory: the agent (fleet/agent.py) registers the host with what libvirt says it
has, follows the placements and decides which objects are this host's; the leader
(fleet/leader.py) runs on whichever host wins the election. Everything fleet-specific the
service needs is here, so service.py stays the same for one host and for many.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Protocol

from kvmrec import __version__
from kvmrec import store as stores
from kvmrec.api.kinds import ObjectKey
from kvmrec.backends import host
from kvmrec.backends.protocols import Inventories, LiveMigrations
from kvmrec.engine import clock as clocks
from kvmrec.fleet.agent import HostAgent
from kvmrec.fleet.leader import Leader
from kvmrec.fleet.migrating import HostMigrations
from kvmrec.fleet.migration_status import MigrationClock, MigrationReporter
from kvmrec.fleet.relocation import Relocator
from kvmrec.fleet.scheduling import Overcommit
from kvmrec.fleet.scope import Scope
from kvmrec.fleet.selectors import HOST_LEVEL_KINDS
from kvmrec.fleet.self_fence import Destroyer, SelfFence
from kvmrec.settings import Settings
from kvmrec.store.base import Store
from kvmrec.store.fleet import FleetParts
from kvmrec.store.fleet_records import Capacity, HostRecord
from kvmrec.store.records import StoredObject

log = logging.getLogger(__name__)

SCHEDULER = "scheduler"  # the election's name


def open_store(settings: Settings) -> tuple[Store, FleetParts | None]:
    """The service's store; with ``settings.host``, as that host of a fleet."""
    if settings.host is None:
        return stores.open(settings.store_location), None
    return stores.open_fleet(str(settings.store), host=settings.host, shared_kinds=HOST_LEVEL_KINDS)


class _Host(Inventories, Destroyer, LiveMigrations, Protocol):
    """What a fleet host asks of its libvirt beside the reconcilers' needs: what it has,
    its fence, its live migrations."""


def member(
    settings: Settings,
    parts: FleetParts | None,
    store: Store,
    libvirt: _Host,
    clock: clocks.Clock,
    queue: Callable[[ObjectKey], None],
    relist: Callable[[], None],
) -> Membership | None:
    """The service's membership of its fleet (None on a single host). ``queue``: reconcile
    a key soon; ``relist``: reconcile every key."""
    if parts is None:
        return None
    return Membership(settings, parts, store, libvirt, clock, queue=queue, relist=relist)


class Membership:
    """This host's part in the fleet, for the service to start, ask and stop."""

    def __init__(
        self,
        settings: Settings,
        parts: FleetParts,
        store: Store,
        libvirt: _Host,
        clock: clocks.Clock,
        *,
        queue: Callable[[ObjectKey], None],
        relist: Callable[[], None],
    ) -> None:
        assert settings.host is not None
        name = self.name = settings.host
        self.scope = Scope(name, settings.labels)
        self.fence = SelfFence(self.scope, libvirt)
        self._lease, self._hosts = parts.lease, parts.hosts
        self._inventory = libvirt
        self._clock = clock
        self._settings = settings
        self.agent = HostAgent(
            scope=self.scope,
            describe=self.describe,
            hosts=parts.hosts,
            placements=parts.placements,
            watching=parts.watching,
            lease=parts.lease,
            prefixes=(parts.objects_prefix, parts.placements_prefix),
            revision=parts.revision,
            queue=queue,
            relist=relist,
            now=clock.wall,
        )
        overcommit = Overcommit(settings.overcommit_memory, settings.overcommit_cpu)
        relocator = Relocator(
            store=parts.statuses,
            placements=parts.placements,
            window=settings.fencing_window,
            clock=clock.monotonic,
            overcommit=overcommit,
            wake=lambda: self.leader.wake(),
        )
        self.leader = Leader(
            election=parts.election(SCHEDULER, name),
            store=parts.statuses,
            hosts=parts.hosts,
            placements=parts.placements,
            watching=parts.watching,
            prefixes=[parts.objects_prefix, parts.placements_prefix, parts.hosts_prefix],
            revision=parts.revision,
            now=clock.wall,
            overcommit=overcommit,
            relocator=relocator,
        )
        self.migrations = HostMigrations(
            scope=self.scope,
            backend=libvirt,
            hosts=parts.hosts,
            placements=parts.placements,
            migrations=parts.migrations,
            watching=parts.watching,
            prefix=parts.migrations_prefix,
            revision=parts.revision,
            reporter=MigrationReporter(store, parts.statuses, name, clock),
            clock=MigrationClock(clock),
            acting=self.acting,
            stall_timeout=settings.migration_stall_timeout,
        )

    def describe(self) -> HostRecord:
        """This host as it registers: what libvirt says it has, now."""
        found = self._inventory.inventory()
        # libvirt's test driver runs guests of any type: it stands for a KVM host.
        kvm = "kvm" in found.domain_types or "test" in found.domain_types
        return HostRecord(
            name=self.name,
            labels=dict(self.scope.labels),
            capacity=Capacity(memory_bytes=found.memory_bytes, vcpus=found.vcpus),
            domain_type="kvm" if kvm else "qemu",
            ovs_datapath="system" if host.kernel_datapath() else "netdev",
            version=__version__,
            ready=True,
            last_heartbeat=self._clock.wall(),
            shared_storage=tuple(str(p) for p in self._settings.shared_storage),
            migration_uri=self._settings.migration_uri or self._settings.connect,
            migration_address=self._settings.migration_address,
        )

    def start(self) -> None:
        self._lease.on_lost(self._fence)  # before the agent's own: fence, then rejoin
        self.agent.start()
        self.leader.start()
        self.migrations.start()

    def stop(self) -> None:
        self.migrations.stop()
        self.leader.stop()
        if self.fence.ha_here() and not self._lease.lost:
            # Its HA guests run on without kvmrec: the scheduler must not take the lease's
            # end for a death and start them elsewhere.
            try:
                self._hosts.set_stopped(self.name, self._clock.wall())
                log.warning("host %s stops with HA guests running: they stay here", self.name)
            except Exception as exc:
                log.error("host %s: cannot say it stopped on purpose: %s", self.name, exc)
        self.agent.stop()

    def acting(self) -> bool:
        return self.agent.acting()

    def mine(self, obj: StoredObject) -> bool:
        self.fence.note(obj)
        return self.scope.mine(obj)

    def share(self, keys: Iterable[ObjectKey]) -> list[ObjectKey]:
        """The keys this host may have work for: all but the Domains placed elsewhere or
        nowhere (known from memory; the reconcile still asks ``mine`` of the object)."""
        return [key for key in keys if key.kind != "Domain" or self.scope.placed_here_now(key)]

    def _fence(self) -> None:
        destroyed = self.fence.fence()
        if destroyed:
            log.error(
                "host %s fenced itself: destroyed %s; they may be started elsewhere",
                self.name,
                ", ".join(destroyed),
            )
