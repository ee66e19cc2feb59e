"""The parts a Domain is made of: its disks, interfaces, graphics and CPU.

Each is a frozen dataclass that ``DomainSpec`` (api/kinds.py) holds, built from a validated,
defaulted manifest spec; the backends turn them into libvirt XML and back, so comparing
the two compares like with like. An interface without a ``mac`` gets one derived from the
names, stable across restarts and hosts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kvmrec.api import quantities


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


def disk(d: Mapping[str, Any]) -> Disk:
    """A disk of a validated spec (schema defaults filled in)."""
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
