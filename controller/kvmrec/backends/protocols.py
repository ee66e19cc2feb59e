"""What the reconcilers, planning and the CLI need of each backend, one Protocol a concern.

The implementations are libvirt/ (``Hypervisor`` is all of the libvirt ones on one
connection; ``GuestAgent`` the guest agent) and ovs/ (``Ovsdb``); the tests have in-memory
fakes of some (tests/support/fakes.py). Every implementation raises the errors of
backends/errors.py: ``NotFound`` for an object that is not there where one must be,
``Unavailable`` while the daemon cannot be reached, ``BackendError`` for any other failure.

Nothing here loads libvirt or OVSDB code (an import-linter contract in pyproject.toml holds it).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from kvmrec.backends.domain_xml import Owner
from kvmrec.backends.libvirt.live import (
    Fingerprint,
    GuestInfo,
    HostInventory,
    LiveDomain,
    LiveNetwork,
)
from kvmrec.backends.ovs.model import Bridge, BridgeChange
from kvmrec.backends.snapshot_state import SnapshotInfo

# -- libvirt -------------------------------------------------------------------------------


class DomainCalls(Protocol):
    """A libvirt domain for one operation of the guest agent's, errors mapped to ours."""

    def domain_call(self, name: str, what: str) -> AbstractContextManager[Any]: ...


class DomainReader(Protocol):
    def get_domain(self, name: str) -> LiveDomain | None:
        """The domain as libvirt has it; None if there is no such domain."""


class Domains(DomainReader, Protocol):
    """Domains: read, define, start, stop, undefine, change live."""

    def domain_xml(self, name: str) -> str: ...

    def fingerprints(self) -> Mapping[str, Fingerprint]: ...

    def define_domain(self, xml: str) -> None: ...

    def start_domain(self, name: str) -> bool:
        """False when it was running already by then (a libvirt job started it)."""

    def resume_domain(self, name: str) -> None: ...

    def destroy_domain(self, name: str) -> None: ...

    def undefine_domain(self, name: str) -> None: ...

    def set_autostart(self, name: str, enabled: bool) -> None: ...

    def set_owner(self, name: str, owner: Owner | None) -> None: ...

    def domain_type_supported(self, virt_type: str) -> bool: ...

    def set_vcpus_live(self, name: str, count: int) -> None: ...

    def set_memory_live(self, name: str, kib: int) -> None: ...

    def attach_live(self, name: str, device_xml: str) -> None: ...

    def detach_live(self, name: str, device_xml: str) -> None: ...

    def block_size(self, name: str, dev: str) -> int: ...

    def block_resize(self, name: str, dev: str, size: int) -> None: ...


class Storage(Protocol):
    """Volumes of libvirt storage pools."""

    def volume_path(self, pool: str, volume: str) -> str | None: ...

    def volume_capacity(self, pool: str, volume: str) -> int: ...

    def create_volume(self, pool: str, volume: str, fmt: str, size: int) -> None: ...

    def grow_volume(self, pool: str, volume: str, size: int) -> None: ...

    def delete_volume(self, pool: str, volume: str) -> None: ...


class DomainHost(Domains, Storage, DomainCalls, Protocol):
    """What the Domain reconciler drives: domains, their volumes, and (for the guest agent
    it makes when given none) domain calls."""


class Snapshots(Protocol):
    """Internal snapshots of domains; freezing a guest for one."""

    def list_snapshots(self, name: str) -> list[SnapshotInfo]:
        """Newest first; ``NotFound`` without such a domain."""

    def get_snapshot(self, name: str, snapshot: str) -> SnapshotInfo:
        """``NotFound`` without such a snapshot."""

    def create_snapshot(self, name: str, snapshot: str, description: str) -> None: ...

    def delete_snapshot(self, name: str, snapshot: str) -> None: ...

    def revert_snapshot(self, name: str, snapshot: str, *, running: bool | None) -> None: ...

    def freeze(self, name: str) -> int: ...

    def thaw(self, name: str) -> None: ...


class SnapshotHost(Snapshots, DomainReader, Protocol):
    """What the Snapshot and SnapshotPolicy reconcilers drive: snapshots, and whether
    their domain is there and runs."""


class Networks(Protocol):
    """libvirt networks."""

    def get_network(self, name: str) -> LiveNetwork | None:
        """The network as libvirt has it; None if there is no such network."""

    def network_xml(self, name: str) -> str:
        """The persistent definition, as libvirt has it; ``NotFound`` without it."""

    def network_active(self, name: str) -> bool | None:
        """Whether it runs; None if there is no such network."""

    def define_network(self, xml: str) -> None: ...

    def start_network(self, name: str) -> None: ...

    def stop_network(self, name: str) -> None:
        """Nothing if it is not running."""

    def undefine_network(self, name: str) -> None: ...

    def set_network_autostart(self, name: str, enabled: bool) -> None: ...

    def update_dhcp_host(self, name: str, host_xml: str, *, add: bool, live: bool) -> None: ...


class GuestAgent(Protocol):
    """The guest's side, through the QEMU guest agent (libvirt/guest_agent.py)."""

    def info(self, name: str, *, agent: bool, leases: bool) -> GuestInfo: ...

    def ping(self, name: str) -> float: ...

    def shutdown(self, name: str, method: str) -> None: ...

    def sync_clock(self, name: str, *, patience: float = 0.0) -> None: ...

    def clock_offset(self, name: str) -> float | None: ...

    def thaw_if_frozen(self, name: str, *, patience: float = 0.0) -> bool: ...

    def set_password(self, name: str, user: str, password: str) -> None: ...


class Inventories(Protocol):
    """What the host offers its guests (a fleet host registers it)."""

    def inventory(self) -> HostInventory: ...


@dataclass(frozen=True)
class MigrationTarget:
    """The host a guest migrates to: its name, the URI its libvirtd is reached by from
    the source's, and the address QEMU's stream goes to (None: libvirt's default)."""

    host: str
    uri: str
    address: str | None = None


class MigrationJob(Protocol):
    """A migration libvirt is carrying out."""

    def done(self) -> bool: ...

    def progress(self) -> Mapping[str, int] | None:
        """data_total, data_remaining, data_processed (bytes) and rate (bytes/s) now;
        None when no job is running."""

    def abort(self) -> None: ...

    def error(self) -> str | None:
        """Once done: why it failed, None when it succeeded."""

    def completed(self) -> Mapping[str, int]:
        """Once succeeded: time_elapsed and downtime (ms) as the target's libvirt says."""


class LiveMigrations(Protocol):
    """Peer-to-peer live migration of this host's guests to another host's libvirtd."""

    def blockers(self, name: str, target: MigrationTarget, *, copy_storage: bool) -> list[str]:
        """What keeps guest ``name`` from migrating to ``target`` ([] when nothing does)."""

    def begin(self, name: str, target: MigrationTarget, *, copy_storage: bool) -> MigrationJob:
        """Start the migration (for ``copy_storage``, its local disks are made at the
        target first)."""

    def runs_here(self, name: str) -> bool: ...

    def runs_at(self, name: str, target: MigrationTarget) -> bool: ...

    def evict(self, name: str) -> None:
        """Stop the guest at once and forget its definition here (its disks stay)."""


class LibvirtHost(DomainHost, SnapshotHost, Networks, Protocol):
    """Everything libvirt answers, as ``kvmrec plan`` and the snapshot commands use it."""


# -- Open vSwitch --------------------------------------------------------------------------


class OvsBridges(Protocol):
    """Open vSwitch bridges and their ports, and the bridge device's promiscuous flag."""

    def get_bridge(self, name: str) -> Bridge | None: ...

    def apply(self, change: BridgeChange) -> None:
        """Make the bridge what ``change`` says in one transaction; ``NotFound`` for a
        bridge that is not there and not to be created."""

    def delete_bridge(self, name: str) -> None:
        """Nothing if there is no such bridge."""

    def kernel_datapath(self) -> bool:
        """Whether bridges of the kernel's datapath ("system") can work here."""

    def promiscuous(self, name: str) -> bool | None:
        """None if there is no such device."""

    def set_promiscuous(self, name: str, on: bool) -> None: ...
