"""What a snapshot holds, and whether a revert can bring it back.

libvirt keeps, with every snapshot, the domain XML of the guest as it was taken (``<domain>``,
its live configuration with everything plugged in since it started). A revert to a snapshot
with memory state starts a new QEMU from that XML and has it load the memory state at once
(``-loadvm``). Hot-plugged devices are on that command line and come back. Hot-plugged vCPUs
are not: libvirt starts QEMU with the vCPUs the guest booted with and plugs the others in
afterwards, too late for ``-loadvm``, which then fails (``Unknown savevm section or instance
'cpu_common' 1``) and leaves the guest shut off. ``restore_problem`` tells that from the
snapshot's XML before anyone tries.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class SnapshotInfo:
    name: str
    time: datetime
    description: str
    state: str  # the domain's state when it was taken: running | shutoff | ...
    memory: bool = False  # it holds the guest's memory state
    restore_problem: str | None = None  # why a revert to it cannot succeed


def parse(xml: str) -> SnapshotInfo:
    """A snapshot from its ``virDomainSnapshotGetXMLDesc``."""
    root = ET.fromstring(xml)
    memory = root.find("memory")
    held = memory is not None and memory.get("snapshot", "no") != "no"
    # Without a <memory> element (old libvirt), a snapshot of a running guest has memory.
    if memory is None:
        held = root.findtext("state", "") in ("running", "paused")
    return SnapshotInfo(
        name=root.findtext("name", ""),
        time=datetime.fromtimestamp(int(root.findtext("creationTime", "0")), UTC),
        description=root.findtext("description", ""),
        state=root.findtext("state", ""),
        memory=held,
        restore_problem=restore_problem(root.find("domain")) if held else None,
    )


def restore_problem(domain: ET.Element | None) -> str | None:
    """Why the memory state of a guest with this live XML cannot be loaded again."""
    if domain is None:
        return None
    enabled = [v for v in domain.findall("vcpus/vcpu") if v.get("enabled") == "yes"]
    plugged = [v for v in enabled if v.get("hotpluggable") == "yes"]
    if not plugged:
        return None
    booted = len(enabled) - len(plugged)
    return (
        f"its memory state holds {len(enabled)} vCPUs, {len(plugged)} of them hot-plugged; "
        f"a revert starts QEMU with the {booted} the guest booted with, and QEMU cannot "
        "load the state of the others"
    )


# "2026-12-01T09:17:08.194839Z qemu-system-x86_64: " before each line of QEMU's stderr.
_QEMU_PREFIX = re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+Z\s+qemu-system-\w+:\s*")


def qemu_reason(message: str) -> str:
    """QEMU's own words from a libvirt error that quotes its stderr, one line."""
    _, sep, rest = message.partition("qemu unexpectedly closed the monitor:")
    text = rest if sep else message
    lines = [_QEMU_PREFIX.sub("", line).strip() for line in text.strip().splitlines()]
    return "; ".join(line for line in lines if line)
