"""What a guest's definition says about migrating it: which disks are local, what blocks.

Read from the live domain XML, no libvirt needed. A disk or cdrom whose file is under one
of the ``shared`` directories is on storage every host sees; any other file is local: a
local disk moves only with copy storage (libvirt's non-shared-disk migration, which
needs the image made at the target first), a local cdrom not at all (it is read-only and
libvirt does not copy it, so the target would lack it).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath


@dataclass(frozen=True)
class LocalDisk:
    """A writable disk on a local path: what the target needs made before a copy."""

    dev: str
    path: str
    format: str


@dataclass(frozen=True)
class DiskCheck:
    blockers: tuple[str, ...]
    local: tuple[LocalDisk, ...]


def _shared(path: str, shared: Sequence[str]) -> bool:
    p = PurePosixPath(path)
    return any(p.is_relative_to(PurePosixPath(root)) for root in shared)


def disks(xml: str, shared: Sequence[str], *, copy_storage: bool) -> DiskCheck:
    """The blockers and the local disks of the domain ``xml``."""
    root = ET.fromstring(xml)
    blockers: list[str] = []
    local: list[LocalDisk] = []
    for disk in root.findall("./devices/disk"):
        device = disk.get("device", "disk")
        target = disk.find("target")
        dev = target.get("dev", "?") if target is not None else "?"
        source = disk.find("source")
        path = None if source is None else (source.get("file") or source.get("dev"))
        if path is None or _shared(path, shared):
            continue
        if device in ("cdrom", "floppy"):
            blockers.append(f"{device} {dev} uses {path}, a local path the target lacks")
        elif disk.find("readonly") is not None or disk.find("shareable") is not None:
            blockers.append(f"disk {dev} ({path}) is read-only or shared on a local path")
        elif not copy_storage:
            blockers.append(f"disk {dev} is on a local path ({path}): migrate with --copy-storage")
        else:
            driver = disk.find("driver")
            fmt = driver.get("type", "raw") if driver is not None else "raw"
            local.append(LocalDisk(dev, path, fmt))
    return DiskCheck(tuple(blockers), tuple(local))


def on_shared(xml: str, shared: Sequence[str]) -> bool:
    """Whether any disk file of the domain ``xml`` is under a ``shared`` directory."""
    for disk in ET.fromstring(xml).findall("./devices/disk"):
        source = disk.find("source")
        path = None if source is None else (source.get("file") or source.get("dev"))
        if path is not None and _shared(path, shared):
            return True
    return False


def cpu_mode(xml: str) -> str | None:
    """The guest CPU's mode (host-passthrough, host-model, custom), None without one."""
    cpu = ET.fromstring(xml).find("./cpu")
    if cpu is None:
        return None
    if cpu.get("mode"):
        return cpu.get("mode")
    return "custom" if cpu.find("model") is not None else None


def cpu_xml(xml: str) -> str | None:
    cpu = ET.fromstring(xml).find("./cpu")
    return None if cpu is None else ET.tostring(cpu, encoding="unicode")
