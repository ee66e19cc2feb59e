"""The records of a fleet: its hosts and where each Domain is placed.

A host registers what it is (labels, capacity, hypervisor, Open vSwitch datapath, kvmrec's
version) under a lease; ``ready`` says whether that lease is alive. A placement binds one
Domain to one host, with the scheduler's reason, and is never moved once made. Plain frozen
dataclasses like those of records.py, free of any store, so the scheduler can be given them
by any store and tests can build them by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from kvmrec.api.objects import ObjectKey

DomainType = Literal["kvm", "qemu"]


@dataclass(frozen=True)
class Capacity:
    """What a host has for guests (or what guests take of it)."""

    memory_bytes: int
    vcpus: int


@dataclass(frozen=True)
class HostRecord:
    """One host of the fleet, as it registered and as its lease stands."""

    name: str
    labels: Mapping[str, str]
    capacity: Capacity
    # The best hypervisor it offers: a kvm host runs qemu (TCG) guests too.
    domain_type: DomainType
    ovs_datapath: str | None  # "system" | "netdev"; None: no Open vSwitch
    version: str
    ready: bool
    last_heartbeat: datetime | None
    cordoned: bool = False  # takes no new Domains; those on it stay
    # Directories it shares with other hosts (the ``shared_storage`` setting): an HA
    # Domain's disks must be under one of them.
    shared_storage: tuple[str, ...] = ()
    # Its kvmrec stopped on purpose and left its guests running: not dead (HA leaves it be).
    stopped: bool = False
    draining: bool = False  # its Domains are being moved away (kvmrec drain)
    # Where a source's libvirtd reaches this host's for a peer-to-peer migration, and the
    # address QEMU's migration stream connects to (None: libvirt's default, its hostname).
    migration_uri: str | None = None
    migration_address: str | None = None
    # Seconds since it last renewed its lease, as etcd counts them (None: not known). A
    # Ready host that has not renewed for a while is probably gone before etcd says so.
    unrenewed_for: int | None = None


@dataclass(frozen=True)
class Placement:
    """Domain ``key`` runs on ``host``, decided at ``time`` for ``reason``."""

    key: ObjectKey
    host: str
    reason: str
    time: datetime


MigrationState = Literal["Pending", "Running", "Succeeded", "Failed", "Cancelled"]
FINAL_STATES: frozenset[str] = frozenset({"Succeeded", "Failed", "Cancelled"})


@dataclass(frozen=True)
class Migration:
    """A request to move Domain ``key`` from ``source`` to ``to``, and how it stands.

    ``mode`` "live" moves the running guest; "restart" (``drain --force``) stops it on
    its host and lets the scheduler start it elsewhere. ``progress`` is what the last
    reading of libvirt's job said (data_remaining, data_total, rate in bytes/s).
    ``cancel``: an operator asked to stop it (``kvmrec migrate --cancel``) while it ran;
    the source host aborts libvirt's job and ends it Cancelled."""

    key: ObjectKey
    source: str
    to: str
    requested: datetime
    state: MigrationState = "Pending"
    reason: str = ""
    copy_storage: bool = False
    mode: Literal["live", "restart"] = "live"
    progress: Mapping[str, int] = field(default_factory=dict)
    cancel: bool = False
    revision: int = 0  # the store's revision of the record, for compare-and-swap

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES
