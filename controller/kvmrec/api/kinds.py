"""Typed models of the kinds, built from validated, defaulted manifest specs.

The store keeps specs as plain JSON (what the operator wrote, with schema defaults filled
in); reconcilers turn them into these frozen dataclasses. Sizes are canonical integers
(bytes), so comparing a manifest with what libvirt reports never trips on ``64Mi`` versus
``65536 KiB``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from kvmrec.api import domain_parts, domain_size, osinfo, quantities
from kvmrec.api.cloud_init import CloudInit
from kvmrec.api.domain_parts import Cpu, Disk, Graphics, Interface
from kvmrec.api.high_availability import HighAvailability
from kvmrec.api.installs import Install
from kvmrec.api.objects import Manifest as Manifest
from kvmrec.api.objects import ObjectKey as ObjectKey
from kvmrec.api.objects import spec_digest as spec_digest

ADOPT_ANNOTATION = "kvmrec.io/adopt"


class RunStrategy(StrEnum):
    ALWAYS = "Always"
    RERUN_ON_FAILURE = "RerunOnFailure"
    ONCE = "Once"
    HALTED = "Halted"
    MANUAL = "Manual"


class RestartPolicy(StrEnum):
    MANUAL = "Manual"
    AUTO = "Auto"


class DeletionPolicy(StrEnum):
    DELETE = "Delete"
    ORPHAN = "Orphan"


@dataclass(frozen=True)
class DomainSpec:
    """The fields of a Domain that kvmrec compares with libvirt, and how it acts on them."""

    memory: int  # bytes
    type: str = "kvm"
    vcpus: int = 1
    max_vcpus: int | None = None
    max_memory: int | None = None  # bytes
    run_strategy: RunStrategy = RunStrategy.ALWAYS
    restart_policy: RestartPolicy = RestartPolicy.MANUAL
    autostart: bool = False
    console: str = "serial"
    graphics: Graphics = field(default_factory=Graphics)
    cpu: Cpu | None = None  # None: QEMU's default CPU, the one that starts everywhere
    guest_agent: bool = False
    firmware: str = "bios"
    boot: tuple[str, ...] = ("hd",)
    kernel: str | None = None  # direct kernel boot: the host file QEMU loads
    initrd: str | None = None
    cmdline: str | None = None
    disks: tuple[Disk, ...] = ()
    interfaces: tuple[Interface, ...] = ()
    deletion_policy: DeletionPolicy = DeletionPolicy.DELETE
    # Stopping: seconds from asking the guest to power off to destroying it (None: the
    # service's default).
    grace_period: int | None = None
    sync_clock: bool = False  # set the guest clock through the agent after revert/resume
    # Placement in a fleet (never part of a libvirt definition, so never drift): pinned to
    # ``host``, or on a host whose labels match all of ``host_selector``.
    host: str | None = None
    host_selector: Mapping[str, str] = field(default_factory=dict)
    high_availability: HighAvailability | None = None  # None: left where its host is
    # osinfo-db: the short id (osVariant) and the OS's id (None: not in the database here).
    os_variant: str | None = None
    os_id: str | None = None
    machine: str | None = None  # pc | q35; None: libvirt's default, not compared
    cloud_init: CloudInit | None = None
    # The cloud-init seed as attached (its path and content digest), set by the Domain
    # kind once it has read the seed's sources; attached after ``disks``.
    seed: Disk | None = None
    install: Install | None = None  # installer media, used until the guest is installed
    on_reboot: str = "restart"  # destroy while installing: an installer's reboot ends it

    @property
    def attached_disks(self) -> tuple[Disk, ...]:
        """Every disk of the definition: the manifest's, then the seed."""
        return self.disks if self.seed is None else (*self.disks, self.seed)

    @property
    def vcpus_max(self) -> int:
        return max(self.max_vcpus or self.vcpus, self.vcpus)

    @property
    def memory_max(self) -> int:
        return max(self.max_memory or self.memory, self.memory)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], name: str) -> DomainSpec:
        """Build from a validated spec (schema defaults filled in) of domain ``name``."""
        max_memory = spec.get("maxMemory")
        graphics = spec.get("graphics", {})
        os_ = spec.get("os", {})
        variant = spec.get("osVariant")
        known = osinfo.database().get(variant) if variant else None
        cloud = spec.get("cloudInit")
        return cls(
            memory=domain_size.memory(spec),
            type=spec.get("type", "kvm"),
            vcpus=domain_size.vcpus(spec),
            max_vcpus=spec.get("maxVcpus"),
            max_memory=quantities.parse_bytes(max_memory) if max_memory is not None else None,
            run_strategy=RunStrategy(spec.get("runStrategy", "Always")),
            restart_policy=RestartPolicy(spec.get("restartPolicy", "Manual")),
            autostart=bool(spec.get("autostart", False)),
            console=spec.get("console", "serial"),
            graphics=Graphics(
                type=graphics.get("type", "none"), listen=graphics.get("listen", "127.0.0.1")
            ),
            cpu=Cpu.from_spec(spec["cpu"]) if spec.get("cpu") else None,
            guest_agent=bool(spec.get("guestAgent", False)),
            firmware=os_.get("firmware", "bios"),
            # libvirt gives a definition without a boot device <boot dev="hd"/>: say so,
            # or `boot: []` would be drift that every reconcile redefines in vain.
            boot=tuple(os_.get("boot") or ["hd"]),
            kernel=os_.get("kernel"),
            initrd=os_.get("initrd"),
            cmdline=os_.get("cmdline") or None,
            disks=tuple(domain_parts.disk(d) for d in spec.get("disks", [])),
            interfaces=tuple(domain_parts.interface(name, i) for i in spec.get("interfaces", [])),
            deletion_policy=DeletionPolicy(spec.get("deletionPolicy", "Delete")),
            grace_period=spec.get("terminationGracePeriodSeconds"),
            sync_clock=bool(spec.get("syncClock", False)),
            host=spec.get("host"),
            host_selector=host_selector(spec),
            high_availability=HighAvailability.from_spec(spec),
            os_variant=variant,
            os_id=known.id if known is not None else None,
            machine=os_.get("machine"),
            cloud_init=CloudInit.from_spec(cloud) if cloud else None,
            install=Install.from_spec(spec["install"]) if spec.get("install") else None,
        )


def host_selector(spec: Mapping[str, Any]) -> dict[str, str]:
    """The ``spec.hostSelector.matchLabels`` of any kind that has one ({}: every host)."""
    return dict((spec.get("hostSelector") or {}).get("matchLabels") or {})


@dataclass(frozen=True)
class DhcpHost:
    mac: str
    ip: str
    name: str | None = None


@dataclass(frozen=True)
class NetworkSpec:
    """The fields of a Network that kvmrec compares with libvirt."""

    forward: str | None = None  # nat | isolated | route | bridge; None: as it is
    bridge: str | None = None
    virtualport: str | None = None
    address: str | None = None
    prefix: int = 24
    dhcp_start: str | None = None
    dhcp_end: str | None = None
    dhcp_hosts: tuple[DhcpHost, ...] = ()
    autostart: bool = True
    active: bool = True
    deletion_policy: DeletionPolicy = DeletionPolicy.DELETE
    host_selector: Mapping[str, str] = field(default_factory=dict)  # in a fleet: its hosts

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> NetworkSpec:
        ip = spec.get("ip") or {}
        dhcp = ip.get("dhcp") or {}
        return cls(
            forward=spec.get("forward"),
            bridge=spec.get("bridge"),
            virtualport=spec.get("virtualport"),
            address=ip.get("address"),
            prefix=int(ip.get("prefix", 24)),
            dhcp_start=dhcp.get("start"),
            dhcp_end=dhcp.get("end"),
            dhcp_hosts=tuple(
                DhcpHost(mac=h["mac"], ip=h["ip"], name=h.get("name"))
                for h in dhcp.get("hosts", [])
            ),
            autostart=bool(spec.get("autostart", True)),
            active=bool(spec.get("active", True)),
            deletion_policy=DeletionPolicy(spec.get("deletionPolicy", "Delete")),
            host_selector=host_selector(spec),
        )


@dataclass(frozen=True)
class BridgePort:
    name: str
    type: str = "system"  # system (a host NIC) | internal


@dataclass(frozen=True)
class OvsBridgeSpec:
    datapath_type: str = "auto"
    ports: tuple[BridgePort, ...] = ()
    fail_mode: str | None = None
    external_ids: Mapping[str, str] = field(default_factory=dict)
    promiscuous: bool | None = None
    deletion_policy: DeletionPolicy = DeletionPolicy.DELETE
    host_selector: Mapping[str, str] = field(default_factory=dict)  # in a fleet: its hosts

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> OvsBridgeSpec:
        return cls(
            datapath_type=spec.get("datapathType", "auto"),
            ports=tuple(
                BridgePort(name=p["name"], type=p.get("type", "system"))
                for p in spec.get("ports", [])
            ),
            fail_mode=spec.get("failMode"),
            external_ids=dict(spec.get("externalIds", {})),
            promiscuous=spec.get("promiscuous"),
            deletion_policy=DeletionPolicy(spec.get("deletionPolicy", "Delete")),
            host_selector=host_selector(spec),
        )


@dataclass(frozen=True)
class SnapshotSpec:
    domain: str
    description: str = ""
    quiesce: str = "auto"  # auto | required | never
    memory: bool = True
    keep: bool = False  # deletionPolicy Retain

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> SnapshotSpec:
        return cls(
            domain=spec["domain"],
            description=spec.get("description", ""),
            quiesce=spec.get("quiesce", "auto"),
            memory=bool(spec.get("memory", True)),
            keep=spec.get("deletionPolicy", "Delete") == "Retain",
        )


@dataclass(frozen=True)
class SnapshotPolicySpec:
    match_labels: Mapping[str, str] = field(default_factory=dict)
    domains: tuple[str, ...] = ()
    schedule: str | None = None
    every: str | None = None
    keep_last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    quiesce: str = "auto"
    memory: bool = True
    host_selector: Mapping[str, str] = field(default_factory=dict)  # in a fleet: its hosts

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> SnapshotPolicySpec:
        retention = spec.get("retention", {})
        return cls(
            match_labels=dict((spec.get("selector") or {}).get("matchLabels", {})),
            domains=tuple(spec.get("domains", [])),
            schedule=spec.get("schedule"),
            every=spec.get("every"),
            keep_last=int(retention.get("keepLast", 0)),
            hourly=int(retention.get("hourly", 0)),
            daily=int(retention.get("daily", 0)),
            weekly=int(retention.get("weekly", 0)),
            monthly=int(retention.get("monthly", 0)),
            yearly=int(retention.get("yearly", 0)),
            quiesce=spec.get("quiesce", "auto"),
            memory=bool(spec.get("memory", True)),
            host_selector=host_selector(spec),
        )
