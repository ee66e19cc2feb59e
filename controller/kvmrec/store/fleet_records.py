"""The records of a fleet: its hosts and where each Domain is placed.

A host registers what it is (labels, capacity, hypervisor, Open vSwitch datapath, kvmrec's
version) under a lease; ``ready`` says whether that lease is alive. A placement binds one
Domain to one host, with the scheduler's reason, and is never moved once made. Plain frozen
dataclasses like those of records.py, free of any store, so the scheduler can be given them
by any store and tests can build them by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Placement:
    """Domain ``key`` runs on ``host``, decided at ``time`` for ``reason``."""

    key: ObjectKey
    host: str
    reason: str
    time: datetime
