"""Operating systems from osinfo-db, the database virt-install and virt-manager use.

A Domain's ``osVariant`` (virt-install's ``--os-variant``) is a short id of osinfo-db
(``debian11``). The database is read from its XML files (Debian's ``osinfo-db`` package:
``/usr/share/osinfo/os/VENDOR/*.xml``, or ``$OSINFO_SYSTEM_DIR`` as libosinfo takes it)
with the standard library, into an index built once per process. Of an OS kvmrec keeps
what it records and what it derives defaults from: its id (the URI virt-install writes
into the domain's libosinfo metadata), whether it drives virtio block and network devices
and the q35 chipset, whether it needs UEFI, and its minimum memory and vCPUs. Devices and
resources come down ``derives-from`` and ``clones`` as in libosinfo; an OS's own
``supported="false"`` takes an inherited device away.

``fill_defaults`` writes the derived defaults into a manifest's spec before the schema's
own: only into fields the manifest leaves open, so they are desired state like any other.
"""

from __future__ import annotations

import difflib
import functools
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_DIR = Path("/usr/share/osinfo")

_VIRTIO_BLOCK = ("http://pcisig.com/pci/1af4/1001", "http://pcisig.com/pci/1af4/1042")
_VIRTIO_NET = ("http://pcisig.com/pci/1af4/1000", "http://pcisig.com/pci/1af4/1041")
_E1000E = "http://pcisig.com/pci/8086/10d3"
_Q35 = "http://qemu.org/chipset/x86/q35"


@dataclass(frozen=True)
class OsInfo:
    """What kvmrec uses of one OS of osinfo-db."""

    id: str  # the URI, e.g. http://debian.org/debian/11
    short_id: str
    name: str
    devices: frozenset[str] = frozenset()
    efi_required: bool = False  # BIOS unsupported on x86_64
    min_memory: int | None = None  # bytes
    min_vcpus: int | None = None

    @property
    def virtio_disk(self) -> bool:
        return any(d in self.devices for d in _VIRTIO_BLOCK)

    @property
    def virtio_net(self) -> bool:
        return any(d in self.devices for d in _VIRTIO_NET)

    @property
    def q35(self) -> bool:
        return _Q35 in self.devices

    def defaults(self) -> dict[str, str]:
        """The values this OS gives the fields a manifest leaves open (``machine``,
        ``firmware``, ``diskBus``, ``nicModel``), as virt-install picks them."""
        machine = "q35" if self.q35 else "pc"
        # Without virtio: what the machine has built in, and the NIC its drivers know.
        bus = "virtio" if self.virtio_disk else ("sata" if machine == "q35" else "ide")
        nic = "virtio" if self.virtio_net else ("e1000e" if _E1000E in self.devices else "e1000")
        return {
            "machine": machine,
            "firmware": "efi" if self.efi_required else "bios",
            "diskBus": bus,
            "nicModel": nic,
        }

    def below_minimum(self, memory: int, vcpus: int) -> list[str]:
        """What of ``memory`` (bytes) and ``vcpus`` is below this OS's minimum."""
        short: list[str] = []
        if self.min_memory is not None and memory < self.min_memory:
            short.append(
                f"spec.memory {_mib(memory)} is below the {_mib(self.min_memory)} {self.name} needs"
            )
        if self.min_vcpus is not None and vcpus < self.min_vcpus:
            short.append(f"spec.vcpus {vcpus} is below the {self.min_vcpus} {self.name} needs")
        return short


def _mib(nbytes: int) -> str:
    return f"{nbytes // 2**20} MiB"


@dataclass
class _Raw:
    """One <os> element as written, before inheritance."""

    id: str
    short_ids: list[str]
    name: str
    parents: list[str] = field(default_factory=list)
    devices: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    efi_required: bool | None = None
    min_memory: int | None = None
    min_vcpus: int | None = None


class OsDb:
    """The index: short ids and ids to OSes."""

    def __init__(self, oses: Mapping[str, OsInfo], source: Path) -> None:
        self.source = source
        self._by_short = dict(oses)
        self._by_id = {o.id: o for o in oses.values()}

    def __len__(self) -> int:
        return len(self._by_short)

    def get(self, short_id: str) -> OsInfo | None:
        return self._by_short.get(short_id)

    def by_id(self, os_id: str) -> OsInfo | None:
        return self._by_id.get(os_id)

    def close_matches(self, short_id: str, n: int = 3) -> list[str]:
        """The ``n`` short ids most like ``short_id`` (as difflib rates them), best first,
        equals by name."""
        scored = [(difflib.SequenceMatcher(None, short_id, s).ratio(), s) for s in self._by_short]
        close = sorted((x for x in scored if x[0] >= 0.6), key=lambda x: (-x[0], x[1]))
        return [s for _, s in close[:n]]

    def problem(self, short_id: str) -> str | None:
        """Why ``short_id`` is not an OS of this database, or None when it is."""
        if short_id in self._by_short:
            return None
        if not self._by_short:
            return f"{short_id!r}: osinfo-db is not installed here (no OS in {self.source})"
        close = self.close_matches(short_id)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        return f"{short_id!r} is not an OS in osinfo-db{hint}"


def load(directory: Path) -> OsDb:
    """Read every OS under ``directory``/os (files that do not parse are skipped)."""
    raws: dict[str, _Raw] = {}
    for path in sorted((directory / "os").glob("*/*.xml")):
        try:
            root = ET.parse(path).getroot()
        except (ET.ParseError, OSError):
            continue
        for element in root.iter("os"):
            raw = _read(element)
            if raw is not None:
                raws[raw.id] = raw
    resolved: dict[str, OsInfo] = {}
    for raw in raws.values():
        info = OsInfo(
            id=raw.id,
            short_id=raw.short_ids[0],
            name=raw.name,
            devices=frozenset(_devices(raw, raws, set())),
            efi_required=bool(_inherited(raw, raws, "efi_required")),
            min_memory=_inherited(raw, raws, "min_memory"),
            min_vcpus=_inherited(raw, raws, "min_vcpus"),
        )
        for short in raw.short_ids:
            resolved[short] = info
    return OsDb(resolved, directory / "os")


def _read(element: ET.Element) -> _Raw | None:
    os_id = element.get("id")
    shorts = [s.text.strip() for s in element.findall("short-id") if s.text]
    if not os_id or not shorts:
        return None
    name = next((n.text for n in element.findall("name") if not n.attrib and n.text), shorts[0])
    raw = _Raw(os_id, shorts, name)
    for tag in ("derives-from", "clones"):
        raw.parents += [p.get("id", "") for p in element.findall(tag) if p.get("id")]
    for device in element.findall("devices/device"):
        target = raw.removed if device.get("supported") == "false" else raw.devices
        target.add(device.get("id", ""))
    for firmware in element.findall("firmware"):
        if firmware.get("arch") == "x86_64" and firmware.get("type") == "bios":
            raw.efi_required = firmware.get("supported") == "false"
    for resources in element.findall("resources"):
        if resources.get("arch") not in ("all", "x86_64"):
            continue
        ram = resources.findtext("minimum/ram")
        cpus = resources.findtext("minimum/n-cpus")
        if ram and ram.strip().isdigit():
            raw.min_memory = int(ram)
        if cpus and cpus.strip().isdigit():
            raw.min_vcpus = int(cpus)
    return raw


def _devices(raw: _Raw, raws: Mapping[str, _Raw], seen: set[str]) -> set[str]:
    seen.add(raw.id)
    devices: set[str] = set()
    for parent in raw.parents:
        if parent in raws and parent not in seen:
            devices |= _devices(raws[parent], raws, seen)
    return (devices - raw.removed) | raw.devices


def _inherited(raw: _Raw, raws: Mapping[str, _Raw], attribute: str) -> Any:
    """The OS's own value, else the nearest ancestor's."""
    seen: set[str] = set()
    queue = [raw]
    while queue:
        current = queue.pop(0)
        if current.id in seen:
            continue
        seen.add(current.id)
        value = getattr(current, attribute)
        if value is not None:
            return value
        queue += [raws[p] for p in current.parents if p in raws]
    return None


def directory() -> Path:
    return Path(os.environ.get("OSINFO_SYSTEM_DIR") or DEFAULT_DIR)


@functools.cache
def _cached(path: Path) -> OsDb:
    return load(path)


def database() -> OsDb:
    """The host's osinfo-db, read once per process."""
    return _cached(directory())


def fill_defaults(spec: dict[str, Any], info: OsInfo) -> None:
    """Write ``info``'s defaults into ``spec`` where the manifest leaves the field open."""
    defaults = info.defaults()
    os_ = spec.setdefault("os", {})
    if isinstance(os_, dict):
        os_.setdefault("machine", defaults["machine"])
        os_.setdefault("firmware", defaults["firmware"])
    for disk in spec.get("disks") or []:
        if isinstance(disk, dict) and "bus" not in disk and disk.get("device") != "cdrom":
            disk["bus"] = defaults["diskBus"]
    for iface in spec.get("interfaces") or []:
        if isinstance(iface, dict) and "model" not in iface:
            iface["model"] = defaults["nicModel"]
