"""The records of a fleet: hosts with their capacity, and where each Domain is placed.

Plain frozen dataclasses, free of etcd, like ``records``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from kvmrec.api.objects import ObjectKey


@dataclass(frozen=True)
class Capacity:
    memory_bytes: int
    vcpus: int


@dataclass(frozen=True)
class HostRecord:
    name: str
    labels: Mapping[str, str]
    capacity: Capacity
    domain_type: str
    ovs_datapath: str | None
    version: str
    ready: bool
    last_heartbeat: datetime | None
    cordoned: bool = False


@dataclass(frozen=True)
class Placement:
    key: ObjectKey
    host: str
    reason: str
    time: datetime
