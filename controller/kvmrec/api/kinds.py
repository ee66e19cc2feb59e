"""Typed models of the kinds, built from validated, defaulted manifest specs.

The store keeps specs as plain JSON (what the operator wrote, with schema defaults filled
in); reconcilers turn them into these frozen dataclasses. Sizes are canonical integers
(bytes), so comparing a manifest with what libvirt reports never trips on ``64Mi`` versus
``65536 KiB``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from kvmrec.api import domain_size, osinfo, quantities
from kvmrec.api.cloud_init import CloudInit
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
class CloneSource:
    """Where a full copy of a disk comes from: a file, or a disk of another domain."""

    path: str | None = None
    domain: str | None = None
    disk: int = 0


@dataclass(frozen=True)
class Disk:
    """One disk: how it is attached (compared with libvirt's definition) and how its image
    is made (acted on when the image is missing or too small)."""

    path: str | None = None
    pool: str | None = None
    volume: str | None = None
    format: str = "qcow2"
    bus: str = "virtio"
    device: str = "disk"
    read_only: bool = False
    # Image intents: never part of a libvirt definition.
    size: int | None = None  # bytes
    backing_image: str | None = None
    clone_from: CloneSource | None = None
    delete_image: bool = False
    serial: str | None = None  # the cloud-init seed's: its content digest

    def attachment(self) -> Disk:
        """Only the fields a libvirt definition holds."""
        return Disk(
            path=self.path,
            pool=self.pool,
            volume=self.volume,
            format=self.format,
            bus=self.bus,
            device=self.device,
            read_only=self.read_only or self.device == "cdrom",
            serial=self.serial,
        )

    @property
    def source(self) -> str:
        return self.path if self.path else f"{self.pool}/{self.volume}"


@dataclass(frozen=True)
class Interface:
    """One NIC, attached one of four ways: to a libvirt ``network``, to a ``bridge``,
    directly to a host NIC through macvtap (``dev`` and ``mode``), or as an SR-IOV
    virtual function passed through by its PCI ``address`` (``vlan`` tags its traffic)."""

    name: str
    mac: str
    network: str | None = None
    bridge: str | None = None
    virtualport: str | None = None
    model: str = "virtio"  # "" for hostdev: the guest drives the VF itself
    dev: str | None = None  # direct: the host NIC
    mode: str | None = None  # direct: bridge | vepa | private | passthrough
    address: str | None = None  # hostdev: the VF's PCI address, 0000:03:10.2
    vlan: int | None = None  # hostdev: the VLAN tag

    @property
    def type(self) -> str:
        """network | bridge | direct | hostdev, as libvirt's <interface type>."""
        if self.network:
            return "network"
        if self.dev:
            return "direct"
        if self.address:
            return "hostdev"
        return "bridge"


def interface(domain: str, i: Mapping[str, Any]) -> Interface:
    """An interface of a validated spec (schema defaults filled in) of ``domain``."""
    source = i.get("source") or {}
    hostdev = i.get("type") == "hostdev"
    return Interface(
        name=i["name"],
        mac=i.get("mac") or derived_mac(domain, i["name"]),
        network=i.get("network"),
        bridge=i.get("bridge"),
        virtualport=i.get("virtualport"),
        model="" if hostdev else i.get("model", "virtio"),
        dev=source.get("dev"),
        mode=source.get("mode", "bridge") if source.get("dev") else None,
        address=source["address"].lower() if source.get("address") else None,
        vlan=i.get("vlan"),
    )


@dataclass(frozen=True)
class Graphics:
    type: str = "none"
    listen: str = "127.0.0.1"


@dataclass(frozen=True)
class CpuFeature:
    name: str
    policy: str = "require"  # require | disable | optional | forbid


@dataclass(frozen=True)
class Cpu:
    """The guest's CPU: the host's own (host-passthrough), libvirt's closest model of it
    (host-model), or a named model (custom) with features required or taken away."""

    mode: str  # host-passthrough | host-model | custom
    model: str | None = None
    features: tuple[CpuFeature, ...] = ()  # sorted by name: their order means nothing

    @classmethod
    def from_spec(cls, cpu: Mapping[str, Any]) -> Cpu:
        return cls(
            mode=cpu["mode"],
            model=cpu.get("model"),
            features=tuple(
                sorted(
                    (
                        CpuFeature(f["name"], f.get("policy", "require"))
                        for f in cpu.get("features", [])
                    ),
                    key=lambda f: f.name,
                )
            ),
        )


def derived_mac(domain: str, interface: str) -> str:
    """A stable, locally administered MAC in QEMU's 52:54:00 range, from the names."""
    digest = hashlib.sha256(f"{domain}/{interface}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


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
            disks=tuple(_disk(d) for d in spec.get("disks", [])),
            interfaces=tuple(interface(name, i) for i in spec.get("interfaces", [])),
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


def _disk(d: Mapping[str, Any]) -> Disk:
    device = d.get("device", "disk")
    clone = d.get("cloneFrom")
    size = d.get("size")
    return Disk(
        path=d.get("path"),
        pool=d.get("pool"),
        volume=d.get("volume"),
        format="raw" if device == "cdrom" else d.get("format", "qcow2"),
        bus=d.get("bus") or ("sata" if device == "cdrom" else "virtio"),
        device=device,
        read_only=bool(d.get("readOnly", False)) or device == "cdrom",
        size=quantities.parse_bytes(size) if size is not None else None,
        backing_image=d.get("backingImage"),
        clone_from=CloneSource(
            path=clone.get("path"), domain=clone.get("domain"), disk=clone.get("disk", 0)
        )
        if clone
        else None,
        delete_image=d.get("deletionPolicy", "Keep") == "Delete",
    )


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
