"""Domain model <-> libvirt domain XML.

``build`` writes the complete definition kvmrec wants, including the ownership stamp in
``<metadata>`` (kvmrec's own XML namespace). ``parse`` reads a definition back into the
same model, looking only at the fields the model holds: the controllers, addresses, PCI
slots, emulator path and aliases libvirt adds are never read, so they can never count as
drift. ``parse(build(x)) == x`` holds for every model, and so it does after libvirt has
filled in its defaults (the integration tests check that round trip on a real libvirtd).
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from kvmrec.api import quantities
from kvmrec.api.kinds import Disk, DomainSpec

OWNER_NS = "https://kvmrec.io/xmlns/owner/v1alpha1"
OWNER_PREFIX = "kvmrec"
_UUID_NS = uuid.UUID("5b1f3a36-9a4e-4c1c-8f0e-6d5a8f3c2b71")

ET.register_namespace(OWNER_PREFIX, OWNER_NS)

_TARGET_PREFIX = {"virtio": "vd", "sata": "sd", "scsi": "sd"}


@dataclass(frozen=True)
class Owner:
    """kvmrec's stamp on an object it manages."""

    kind: str
    name: str
    uid: str
    generation: int
    digest: str


@dataclass(frozen=True)
class DomainConfig:
    """What a libvirt definition says about the fields kvmrec manages."""

    name: str
    uuid: str
    type: str
    vcpus: int
    memory: int  # bytes
    console: str
    disks: tuple[Disk, ...]
    owner: Owner | None


def stable_uuid(name: str) -> str:
    """The UUID kvmrec gives a domain: derived from its name, so every redefinition, every
    restart of the service and every host of a fleet agrees on it."""
    return str(uuid.uuid5(_UUID_NS, f"Domain/{name}"))


def owner_xml(owner: Owner) -> str:
    """The stamp as a standalone element (for ``virDomainSetMetadata``)."""
    return ET.tostring(_owner_element(owner), encoding="unicode")


def _owner_element(owner: Owner) -> ET.Element:
    return ET.Element(
        f"{{{OWNER_NS}}}owner",
        {
            "kind": owner.kind,
            "name": owner.name,
            "uid": owner.uid,
            "generation": str(owner.generation),
            "digest": owner.digest,
        },
    )


def _target_dev(bus: str, index: int) -> str:
    return _TARGET_PREFIX[bus] + "abcdefghijklmnopqrstuvwxyz"[index]


def build(name: str, spec: DomainSpec, owner: Owner | None) -> str:
    """The full domain XML for ``spec``."""
    root = ET.Element("domain", {"type": spec.type})
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "uuid").text = stable_uuid(name)
    if owner is not None:
        ET.SubElement(root, "metadata").append(_owner_element(owner))
    kib = str(quantities.to_kib(spec.memory))
    ET.SubElement(root, "memory", {"unit": "KiB"}).text = kib
    ET.SubElement(root, "currentMemory", {"unit": "KiB"}).text = kib
    ET.SubElement(root, "vcpu", {"placement": "static"}).text = str(spec.vcpus)
    os_ = ET.SubElement(root, "os")
    ET.SubElement(os_, "type", {"arch": "x86_64"}).text = "hvm"
    ET.SubElement(os_, "boot", {"dev": "hd"})
    features = ET.SubElement(root, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(root, "on_poweroff").text = "destroy"
    ET.SubElement(root, "on_reboot").text = "restart"
    ET.SubElement(root, "on_crash").text = "destroy"
    devices = ET.SubElement(root, "devices")
    # Counted per target prefix, not per bus: sata and scsi disks share sdX, and libvirt
    # refuses two disks with one target.
    per_prefix: dict[str, int] = {}
    for disk in spec.disks:
        index = per_prefix.get(_TARGET_PREFIX[disk.bus], 0)
        per_prefix[_TARGET_PREFIX[disk.bus]] = index + 1
        element = ET.SubElement(devices, "disk", {"type": "file", "device": "disk"})
        ET.SubElement(element, "driver", {"name": "qemu", "type": disk.format})
        ET.SubElement(element, "source", {"file": disk.path})
        ET.SubElement(element, "target", {"dev": _target_dev(disk.bus, index), "bus": disk.bus})
        if disk.read_only:
            ET.SubElement(element, "readonly")
    if spec.console == "serial":
        serial = ET.SubElement(devices, "serial", {"type": "pty"})
        ET.SubElement(serial, "target", {"port": "0"})
        console = ET.SubElement(devices, "console", {"type": "pty"})
        ET.SubElement(console, "target", {"type": "serial", "port": "0"})
    # No graphics and no balloon: a headless guest needs neither, and the balloon's memory
    # stats polling would otherwise be the only thing keeping an idle guest busy.
    ET.SubElement(devices, "memballoon", {"model": "none"})
    return ET.tostring(root, encoding="unicode")


def parse(xml: str) -> DomainConfig:
    """The managed fields of a domain definition (or live XML)."""
    root = ET.fromstring(xml)
    memory = root.find("memory")
    devices = root.find("devices")
    disks: list[Disk] = []
    console = "none"
    if devices is not None:
        for element in devices.findall("disk"):
            if element.get("device", "disk") != "disk" or element.get("type") != "file":
                continue
            source = element.find("source")
            target = element.find("target")
            driver = element.find("driver")
            if source is None or target is None:
                continue
            disks.append(
                Disk(
                    path=source.get("file", ""),
                    format=driver.get("type", "raw") if driver is not None else "raw",
                    bus=target.get("bus", "virtio"),
                    read_only=element.find("readonly") is not None,
                )
            )
        if devices.find("serial") is not None or devices.find("console") is not None:
            console = "serial"
    return DomainConfig(
        name=root.findtext("name", ""),
        uuid=root.findtext("uuid", ""),
        type=root.get("type", ""),
        vcpus=int(root.findtext("vcpu", "1")),
        memory=_bytes(memory),
        console=console,
        disks=tuple(disks),
        owner=_owner(root),
    )


def _bytes(element: ET.Element | None) -> int:
    if element is None or not element.text:
        return 0
    factor = {
        "b": 1,
        "bytes": 1,
        "KiB": 1024,
        "k": 1024,
        "MiB": 1024**2,
        "M": 1024**2,
        "GiB": 1024**3,
        "G": 1024**3,
        "TiB": 1024**4,
        "T": 1024**4,
    }
    return int(element.text) * factor.get(element.get("unit", "KiB"), 1024)


def _owner(root: ET.Element) -> Owner | None:
    element = root.find(f"metadata/{{{OWNER_NS}}}owner")
    if element is None:
        return None
    return Owner(
        kind=element.get("kind", ""),
        name=element.get("name", ""),
        uid=element.get("uid", ""),
        generation=int(element.get("generation", "0")),
        digest=element.get("digest", ""),
    )
