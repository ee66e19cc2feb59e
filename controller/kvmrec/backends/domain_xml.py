"""Domain model <-> libvirt domain XML.

``build`` writes the complete definition kvmrec wants, including the ownership stamp and
the libosinfo OS in ``<metadata>`` (backends/domain_metadata.py). ``parse`` reads a
definition back into the same model, looking only at the fields the model holds: the
controllers, addresses, PCI slots, emulator path and aliases libvirt adds are never read,
so they can never count as drift. ``parse(build(x)) == x`` holds for every model, and so
it does after libvirt has filled in its defaults (the integration tests check that round
trip on a real libvirtd).
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from kvmrec.api import quantities
from kvmrec.api.domain_parts import Cpu, Disk, Graphics, Interface
from kvmrec.api.kinds import DomainSpec
from kvmrec.backends import cpu_xml, xml_text
from kvmrec.backends.domain_metadata import OWNER_NS as OWNER_NS
from kvmrec.backends.domain_metadata import OWNER_PREFIX as OWNER_PREFIX
from kvmrec.backends.domain_metadata import Owner as Owner
from kvmrec.backends.domain_metadata import libosinfo_element, read_os_id
from kvmrec.backends.domain_metadata import owner_element as owner_element
from kvmrec.backends.domain_metadata import owner_xml as owner_xml
from kvmrec.backends.domain_metadata import read_owner as read_owner
from kvmrec.backends.interface_xml import KNOWN_TYPES as INTERFACE_TYPES
from kvmrec.backends.interface_xml import element as interface_element
from kvmrec.backends.interface_xml import parse as _interface

_UUID_NS = uuid.UUID("5b1f3a36-9a4e-4c1c-8f0e-6d5a8f3c2b71")


@dataclass(frozen=True)
class DomainConfig:
    """What a libvirt definition says about the fields kvmrec manages."""

    name: str
    uuid: str
    type: str
    vcpus: int  # current
    vcpus_max: int
    memory: int  # current, bytes
    memory_max: int  # bytes
    console: str
    graphics: Graphics
    guest_agent: bool
    firmware: str
    boot: tuple[str, ...]
    kernel: str | None
    initrd: str | None
    cmdline: str | None
    disks: tuple[Disk, ...]  # attachments only (see Disk.attachment)
    interfaces: tuple[Interface, ...]  # names are unknown to libvirt: matched by MAC
    owner: Owner | None
    cpu: Cpu | None = None  # None: QEMU's default CPU
    balloon: bool = False  # a memory balloon: memory can change while the guest runs
    agent_connected: bool = False  # live XML only: qemu-ga is listening in the guest
    machine: str | None = None  # pc | q35 (libvirt's versioned names, shortened)
    os_id: str | None = None  # the libosinfo OS of the metadata
    vnc_port: int | None = None  # live XML only: the TCP port QEMU's VNC server took
    serial_pty: str | None = None  # live XML only: the host pty of the serial console


AGENT_CHANNEL = "org.qemu.guest_agent.0"
_DEV_PREFIX = {"virtio": "vd", "sata": "sd", "scsi": "sd", "ide": "hd"}


def stable_uuid(name: str) -> str:
    """The UUID kvmrec gives a domain: derived from its name, so every redefinition, every
    restart of the service and every host of a fleet agrees on it."""
    return str(uuid.uuid5(_UUID_NS, f"Domain/{name}"))


def target_devs(disks: tuple[Disk, ...]) -> list[str]:
    """Target device names in order: sata and scsi share the sd namespace, as in libvirt."""
    used: dict[str, int] = {}
    names = []
    for disk in disks:
        prefix = _DEV_PREFIX[disk.bus]
        index = used.get(prefix, 0)
        used[prefix] = index + 1
        names.append(prefix + "abcdefghijklmnopqrstuvwxyz"[index])
    return names


def disk_element(disk: Disk, dev: str) -> ET.Element:
    kind = "file" if disk.path else "volume"
    element = ET.Element("disk", {"type": kind, "device": disk.device})
    ET.SubElement(element, "driver", {"name": "qemu", "type": disk.format})
    if disk.path:
        ET.SubElement(element, "source", {"file": disk.path})
    else:
        ET.SubElement(element, "source", {"pool": disk.pool or "", "volume": disk.volume or ""})
    ET.SubElement(element, "target", {"dev": dev, "bus": disk.bus})
    if disk.read_only or disk.device == "cdrom":
        ET.SubElement(element, "readonly")
    if disk.serial:
        ET.SubElement(element, "serial").text = disk.serial
    return element


def interface_xml(iface: Interface) -> str:
    """One interface as a device XML, for hot-plug."""
    return ET.tostring(interface_element(iface), encoding="unicode")


def build(name: str, spec: DomainSpec, owner: Owner | None, *, uuid: str | None = None) -> str:
    """The full domain XML for ``spec``. ``uuid``: the one an existing domain has (libvirt
    refuses to redefine a domain under another); a new one gets ``stable_uuid``.

    Written as text, with ``ET.tostring``'s spelling (the devices and the metadata that are
    trees elsewhere as elements): every reconcile that defines a domain writes one, and a
    tree took three times as long."""
    t, a = xml_text.text, xml_text.attribute
    doc = xml_text.Document("domain", {"type": spec.type})
    doc.markup(f"<name>{t(name)}</name><uuid>{t(uuid or stable_uuid(name))}</uuid>")
    metadata = [
        *([owner_element(owner)] if owner is not None else []),
        *([cpu_xml.stamp(spec.cpu)] if spec.cpu is not None else []),
        *([libosinfo_element(spec.os_id)] if spec.os_id is not None else []),
    ]
    if metadata:
        doc.markup("<metadata>")
        for element in metadata:
            doc.element(element)
        doc.markup("</metadata>")
    current = f' current="{spec.vcpus}"' if spec.vcpus != spec.vcpus_max else ""
    doc.markup(
        f'<memory unit="KiB">{quantities.to_kib(spec.memory_max)}</memory>'
        f'<currentMemory unit="KiB">{quantities.to_kib(spec.memory)}</currentMemory>'
        f'<vcpu placement="static"{current}>{spec.vcpus_max}</vcpu>'
    )
    firmware = ' firmware="efi"' if spec.firmware == "efi" else ""
    machine = f' machine="{a(spec.machine)}"' if spec.machine else ""
    doc.markup(f'<os{firmware}><type arch="x86_64"{machine}>hvm</type>')
    for tag, value in (("kernel", spec.kernel), ("initrd", spec.initrd), ("cmdline", spec.cmdline)):
        if value is not None:
            doc.markup(f"<{tag}>{t(value)}</{tag}>" if value else f"<{tag} />")
    doc.markup("".join(f'<boot dev="{a(dev)}" />' for dev in spec.boot) + "</os>")
    doc.markup("<features><acpi /></features>")
    if spec.cpu is not None:
        doc.element(cpu_xml.element(spec.cpu))
    doc.markup(
        f"<on_poweroff>destroy</on_poweroff><on_reboot>{t(spec.on_reboot)}</on_reboot>"
        "<on_crash>destroy</on_crash><devices>"
    )
    attached = spec.attached_disks
    for disk, dev in zip(attached, target_devs(attached), strict=True):
        doc.element(disk_element(disk, dev))
    for iface in spec.interfaces:
        doc.element(interface_element(iface))
    if spec.console == "serial":
        doc.markup(
            '<serial type="pty"><target port="0" /></serial>'
            '<console type="pty"><target type="serial" port="0" /></console>'
        )
    if spec.guest_agent:
        doc.markup(
            f'<channel type="unix"><target type="virtio" name="{AGENT_CHANNEL}" /></channel>'
        )
    if spec.graphics.type == "vnc":
        doc.markup(
            '<graphics type="vnc" port="-1" autoport="yes">'
            f'<listen type="address" address="{a(spec.graphics.listen)}" /></graphics>'
        )
    # A balloon only where memory can change live; otherwise none, since its stats polling
    # would be the only thing keeping an idle headless guest busy.
    model = "virtio" if spec.memory_max > spec.memory else "none"
    doc.markup(f'<memballoon model="{model}" /></devices>')
    return doc.tostring()


def parse(xml: str) -> DomainConfig:
    """The managed fields of a domain definition (or live XML)."""
    root = ET.fromstring(xml)
    devices = root.find("devices")
    if devices is None:
        devices = ET.Element("devices")
    vcpu = root.find("vcpu")
    vcpus_max = int(vcpu.text or "1") if vcpu is not None else 1
    vcpus = int(vcpu.get("current", vcpus_max)) if vcpu is not None else 1
    memory_max = _bytes(root.find("memory"))
    current = root.find("currentMemory")
    os_ = root.find("os")
    agent = _agent_target(devices)
    return DomainConfig(
        name=root.findtext("name", ""),
        uuid=root.findtext("uuid", ""),
        type=root.get("type", ""),
        vcpus=vcpus,
        vcpus_max=vcpus_max,
        memory=_bytes(current) if current is not None else memory_max,
        memory_max=memory_max,
        console="serial"
        if devices.find("serial") is not None or devices.find("console") is not None
        else "none",
        graphics=_graphics(devices),
        guest_agent=agent is not None,
        firmware=_firmware(os_),
        boot=tuple(b.get("dev", "") for b in os_.findall("boot")) if os_ is not None else (),
        kernel=os_.findtext("kernel") if os_ is not None else None,
        initrd=os_.findtext("initrd") if os_ is not None else None,
        cmdline=(os_.findtext("cmdline") or None) if os_ is not None else None,
        disks=tuple(d for d in (_disk(e) for e in devices.findall("disk")) if d is not None),
        interfaces=tuple(
            i for i in (_interface(e) for e in devices.findall("interface")) if i is not None
        ),
        owner=read_owner(root),
        cpu=cpu_xml.parse(root),
        balloon=any(b.get("model") not in (None, "none") for b in devices.findall("memballoon")),
        agent_connected=agent is not None and agent.get("state") == "connected",
        machine=_machine(os_),
        os_id=read_os_id(root),
        vnc_port=_vnc_port(devices),
        serial_pty=_pty(devices),
    )


def _agent_target(devices: ET.Element) -> ET.Element | None:
    """The target of the guest agent's channel, if the domain has one."""
    for channel in devices.findall("channel"):
        target = channel.find("target")
        if target is not None and target.get("name") == AGENT_CHANNEL:
            return target
    return None


def _machine(os_: ET.Element | None) -> str | None:
    """``pc-q35-7.2`` and ``q35`` are q35; ``pc-i440fx-7.2`` and ``pc`` are pc."""
    type_ = os_.find("type") if os_ is not None else None
    machine = type_.get("machine") if type_ is not None else None
    if not machine:
        return None
    return "q35" if "q35" in machine else "pc"


def _vnc_port(devices: ET.Element) -> int | None:
    for graphics in devices.findall("graphics"):
        port = graphics.get("port", "")
        if graphics.get("type") == "vnc" and port.isdigit():  # -1: autoport, not started
            return int(port)
    return None


def _pty(devices: ET.Element) -> str | None:
    for console in devices.findall("console"):
        source = console.find("source")
        if console.get("type") == "pty" and source is not None and source.get("path"):
            return source.get("path")
    return None


def _firmware(os_: ET.Element | None) -> str:
    if os_ is None:
        return "bios"
    if os_.get("firmware") == "efi":
        return "efi"
    loader = os_.find("loader")
    if loader is not None and loader.get("type") == "pflash":
        return "efi"
    return "bios"


def _graphics(devices: ET.Element) -> Graphics:
    element = devices.find("graphics")
    if element is None:
        return Graphics()
    listen = element.find("listen")
    address = element.get("listen") or (listen.get("address") if listen is not None else None)
    return Graphics(type=element.get("type", ""), listen=address or "127.0.0.1")


def _disk(element: ET.Element) -> Disk | None:
    device = element.get("device", "disk")
    if device not in ("disk", "cdrom"):
        return None
    source = element.find("source")
    target = element.find("target")
    driver = element.find("driver")
    if target is None:
        return None
    path = pool = volume = None
    if source is not None:
        path = source.get("file")
        pool, volume = source.get("pool"), source.get("volume")
    return Disk(
        path=path,
        pool=pool,
        volume=volume,
        format=driver.get("type", "raw") if driver is not None else "raw",
        bus=target.get("bus", "virtio"),
        device=device,
        read_only=element.find("readonly") is not None,
        serial=element.findtext("serial") or None,
    )


# libvirt's memory units (what a definition says; libvirt itself writes KiB).
_UNIT_BYTES = {
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


def _bytes(element: ET.Element | None) -> int:
    if element is None or not element.text:
        return 0
    return int(element.text) * _UNIT_BYTES.get(element.get("unit", "KiB"), 1024)


# Devices a manifest cannot describe: an import says so instead of dropping them silently.
_UNMODELLED_DEVICES = ("hostdev", "filesystem", "smartcard", "redirdev", "tpm", "shmem")


def unmodelled(xml: str) -> list[str]:
    """What a definition holds that the Domain kind cannot express."""
    root = ET.fromstring(xml)
    devices = root.find("devices")
    found: list[str] = []
    if devices is None:
        return found
    for tag in _UNMODELLED_DEVICES:
        if devices.find(tag) is not None:
            found.append(f"<{tag}> devices")
    for disk in devices.findall("disk"):
        if disk.get("device", "disk") not in ("disk", "cdrom") or disk.get("type") not in (
            "file",
            "volume",
        ):
            found.append(f"a {disk.get('type')} {disk.get('device', 'disk')}")
        elif disk.find("source") is None:
            found.append(f"an empty {disk.get('device')} drive")
    for iface in devices.findall("interface"):
        if iface.get("type") not in INTERFACE_TYPES:
            found.append(f"a {iface.get('type')} interface")
    for graphics in devices.findall("graphics"):
        if graphics.get("type") != "vnc":
            found.append(f"{graphics.get('type')} graphics")
    return found
