"""Rules of a manifest that its kind's schema cannot express, one function per kind.

Each runs on a spec the schema has already accepted and defaulted, and returns its
problems as (field, reason, path); the path lets the caller name the line.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from kvmrec.api import osinfo, quantities, schema
from kvmrec.api.domain_parts import derived_mac
from kvmrec.api.yaml_loading import Path
from kvmrec.snapshots import schedule

MIN_MEMORY = 1024 * 1024
_PCI = re.compile(r"^[0-9A-Fa-f]{4}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]$")
READ_ONLY_BUSES = ("virtio", "scsi")


def semantic_problems(kind: str, name: str, spec: Mapping[str, Any]) -> list[tuple[str, str, Path]]:
    """Rules the schema cannot express."""
    if kind == "Domain":
        return _domain_problems(name, spec)
    if kind == "Network":
        return _network_problems(spec)
    if kind == "OvsBridge":
        return _bridge_problems(name, spec)
    if kind == "SnapshotPolicy":
        return _policy_problems(spec)
    return []


def _policy_problems(spec: Mapping[str, Any]) -> list[tuple[str, str, Path]]:
    problems: list[tuple[str, str, Path]] = []
    if ("schedule" in spec) == ("every" in spec):
        problems.append(("spec.schedule", "needs exactly one of schedule or every", ("spec",)))
    try:
        if "schedule" in spec:
            schedule.Cron.parse(spec["schedule"])
    except schedule.ScheduleError as exc:
        problems.append(("spec.schedule", str(exc), ("spec", "schedule")))
    try:
        if "every" in spec:
            schedule.parse_duration(spec["every"])
    except schedule.ScheduleError as exc:
        problems.append(("spec.every", str(exc), ("spec", "every")))
    if not spec.get("domains") and not (spec.get("selector") or {}).get("matchLabels"):
        problems.append(("spec.selector", "needs selector.matchLabels or domains", ("spec",)))
    return problems


def _bridge_problems(name: str, spec: Mapping[str, Any]) -> list[tuple[str, str, Path]]:
    problems: list[tuple[str, str, Path]] = []
    seen: dict[str, int] = {}
    for i, port in enumerate(spec.get("ports", [])):
        at: Path = ("spec", "ports", i, "name")
        if port["name"] == name:
            problems.append((schema.format_path(at), "is the bridge's own port", at))
        first = seen.setdefault(port["name"], i)
        if first != i:
            reason = f"{port['name']!r} is already used by spec.ports[{first}]"
            problems.append((schema.format_path(at), reason, at))
    for key in spec.get("externalIds", {}):
        if key.startswith("kvmrec-"):
            at = ("spec", "externalIds", key)
            problems.append((schema.format_path(at), "kvmrec- keys are kvmrec's own", at))
    return problems


def _network_problems(spec: Mapping[str, Any]) -> list[tuple[str, str, Path]]:
    problems: list[tuple[str, str, Path]] = []

    def add(path: Path, reason: str) -> None:
        problems.append((schema.format_path(path), reason, path))

    forward = spec.get("forward")
    if forward == "bridge":
        if "bridge" not in spec:
            add(("spec", "bridge"), "is required with forward: bridge (the bridge to join)")
        if "ip" in spec:
            add(("spec", "ip"), "is not allowed with forward: bridge (libvirt does no addressing)")
    else:
        if "virtualport" in spec:
            add(("spec", "virtualport"), "goes only with forward: bridge")
        if forward in ("nat", "route") and "ip" not in spec:
            add(("spec", "ip"), f"is required with forward: {forward}")
    ip = spec.get("ip")
    if not ip:
        return problems
    try:
        subnet = ipaddress.IPv4Interface(f"{ip['address']}/{ip.get('prefix', 24)}").network
    except ValueError as exc:
        add(("spec", "ip", "address"), str(exc))
        return problems

    def inside(path: Path, value: str) -> ipaddress.IPv4Address | None:
        try:
            address = ipaddress.IPv4Address(value)
        except ValueError as exc:
            add(path, str(exc))
            return None
        if address not in subnet:
            add(path, f"{value} is outside {subnet}")
        return address

    dhcp = ip.get("dhcp")
    if dhcp:
        start = inside(("spec", "ip", "dhcp", "start"), dhcp["start"])
        end = inside(("spec", "ip", "dhcp", "end"), dhcp["end"])
        if start and end and start > end:
            add(("spec", "ip", "dhcp", "end"), f"{end} comes before start {start}")
        seen_macs: dict[str, int] = {}
        seen_ips: dict[str, int] = {}
        for i, host in enumerate(dhcp.get("hosts", [])):
            at: Path = ("spec", "ip", "dhcp", "hosts", i)
            inside((*at, "ip"), host["ip"])
            for key, seen in (("mac", seen_macs), ("ip", seen_ips)):
                first = seen.setdefault(host[key], i)
                if first != i:
                    add((*at, key), f"{host[key]} is already used by hosts[{first}]")
    return problems


def _domain_problems(name: str, spec: Mapping[str, Any]) -> list[tuple[str, str, Path]]:
    problems: list[tuple[str, str, Path]] = []

    def add(path: Path, reason: str) -> None:
        problems.append((schema.format_path(path), reason, path))

    sizes: dict[str, int] = {}
    for field in ("memory", "maxMemory"):
        if field not in spec:
            continue
        try:
            sizes[field] = quantities.parse_bytes(spec[field])
            if sizes[field] < MIN_MEMORY:
                add(("spec", field), f"{spec[field]!r} is below 1Mi")
        except ValueError as exc:
            add(("spec", field), str(exc))
    if sizes.get("maxMemory", 1 << 62) < sizes.get("memory", 0):
        add(("spec", "maxMemory"), f"must be at least memory ({spec['memory']})")
    if spec.get("maxVcpus", 1 << 30) < spec.get("vcpus", 1):
        add(("spec", "maxVcpus"), f"must be at least vcpus ({spec['vcpus']})")

    sources: dict[str, int] = {}
    for i, disk in enumerate(spec.get("disks", [])):
        at: Path = ("spec", "disks", i)
        has_path, has_volume = "path" in disk, "pool" in disk or "volume" in disk
        if has_path == has_volume:
            add(at, "needs either path, or pool and volume")
        elif has_volume and not ("pool" in disk and "volume" in disk):
            add(at, "pool and volume go together")
        source = disk.get("path") or f"{disk.get('pool')}/{disk.get('volume')}"
        first = sources.setdefault(source, i)
        if first != i:
            add(
                (*at, "path" if has_path else "volume"),
                f"{source!r} is already used by spec.disks[{first}]",
            )
        for ref in ("path", "backingImage"):
            if ref in disk and ".." in disk[ref].split("/"):
                add((*at, ref), "must not contain '..'")
        clone = disk.get("cloneFrom")
        if clone is not None:
            if ("path" in clone) == ("domain" in clone):
                add((*at, "cloneFrom"), "needs either path or domain")
            if "path" in clone and ".." in clone["path"].split("/"):
                add((*at, "cloneFrom", "path"), "must not contain '..'")
            if "backingImage" in disk:
                add((*at, "cloneFrom"), "cannot be combined with backingImage")
        if "backingImage" in disk and disk.get("format", "qcow2") != "qcow2":
            add((*at, "backingImage"), "needs format qcow2")
        if disk.get("device") == "cdrom":
            for field in ("size", "backingImage", "cloneFrom", "pool", "volume"):
                if field in disk:
                    add((*at, field), "is not allowed for a cdrom")
            if disk.get("bus") in ("virtio",):
                add((*at, "bus"), "a cdrom cannot be on virtio (use sata, scsi or ide)")
        plain_disk = disk.get("device", "disk") == "disk"
        if disk.get("readOnly") and plain_disk and disk.get("bus", "virtio") not in READ_ONLY_BUSES:
            add((*at, "readOnly"), "read-only disks need bus virtio or scsi (QEMU refuses others)")
        if "size" in disk:
            try:
                if quantities.parse_bytes(disk["size"]) < MIN_MEMORY:
                    add((*at, "size"), f"{disk['size']!r} is below 1Mi")
            except ValueError as exc:
                add((*at, "size"), str(exc))

    os_ = spec.get("os") or {}
    for field in ("initrd", "cmdline"):
        if field in os_ and "kernel" not in os_:
            add(("spec", "os", field), "needs os.kernel (it belongs to direct kernel boot)")
    for field in ("kernel", "initrd"):
        if field in os_ and ".." in os_[field].split("/"):
            add(("spec", "os", field), "must not contain '..'")
    if "kernel" in os_ and os_.get("firmware") == "efi":
        add(("spec", "os", "kernel"), "direct kernel boot needs firmware bios")
    variant = spec.get("osVariant")
    if isinstance(variant, str):
        unknown = osinfo.database().problem(variant)
        if unknown:
            add(("spec", "osVariant"), unknown)
    cloud = spec.get("cloudInit") or {}
    for field in ("userData", "metaData", "networkConfig"):
        source = cloud.get(field)
        if isinstance(source, dict) and ".." in source["file"].split("/"):
            add(("spec", "cloudInit", field, "file"), "must not contain '..'")
    install = spec.get("install")
    if isinstance(install, dict):
        if ("cdrom" in install) == ("location" in install):
            add(("spec", "install"), "needs either cdrom or location")
        if "extraArgs" in install and "location" not in install:
            add(("spec", "install", "extraArgs"), "goes with location (the installer's kernel)")
        for field in ("cdrom", "location"):
            if field in install and ".." in install[field].split("/"):
                add(("spec", "install", field), "must not contain '..'")
        if "location" in install and os_.get("firmware") == "efi":
            add(("spec", "install", "location"), "direct kernel boot needs firmware bios")
    if spec.get("syncClock") and not spec.get("guestAgent"):
        add(("spec", "syncClock"), "needs guestAgent: true (the clock is set through the agent)")
    if "host" in spec and "hostSelector" in spec:
        add(
            ("spec", "hostSelector"),
            "cannot be combined with spec.host (host pins the Domain to one host, "
            "hostSelector lets kvmrec choose among matching hosts)",
        )

    problems += _cpu_problems(spec)
    problems += _high_availability_problems(spec)

    names: dict[str, int] = {}
    macs: dict[str, int] = {}
    functions: dict[str, int] = {}
    for i, iface in enumerate(spec.get("interfaces", [])):
        at = ("spec", "interfaces", i)
        for path, reason in interface_problems(iface):
            add((*at, *path), reason)
        address = (iface.get("source") or {}).get("address")
        if iface.get("type") == "hostdev" and isinstance(address, str):
            first = functions.setdefault(address.lower(), i)
            if first != i:
                reason = f"{address} is already used by spec.interfaces[{first}]"
                add((*at, "source", "address"), reason)
        first = names.setdefault(iface["name"], i)
        if first != i:
            add((*at, "name"), f"{iface['name']!r} is already used by spec.interfaces[{first}]")
            continue
        # Derived MACs count too: a written one may equal another interface's derived one.
        mac = iface.get("mac") or derived_mac(name, iface["name"])
        first = macs.setdefault(mac, i)
        if first != i:
            add((*at, "mac"), f"{mac} is already used by spec.interfaces[{first}]")
    return problems


def _high_availability_problems(spec: Mapping[str, Any]) -> list[tuple[str, str, Path]]:
    """An HA guest is started by the fleet wherever its disks are shared: by path only
    (a pool's volume has no path to check before a host resolves it), never by autostart."""
    if not (spec.get("highAvailability") or {}).get("restart"):
        return []
    problems: list[tuple[str, str, Path]] = []
    if spec.get("autostart"):
        path: Path = ("spec", "autostart")
        why = "must be false with highAvailability.restart (the fleet decides where it starts)"
        problems.append((schema.format_path(path), why, path))
    for i, disk in enumerate(spec.get("disks", [])):
        if "path" not in disk and disk.get("device", "disk") != "cdrom":
            path = ("spec", "disks", i)
            why = "needs a path with highAvailability.restart (on storage the hosts share)"
            problems.append((schema.format_path(path), why, path))
    return problems


def _cpu_problems(spec: Mapping[str, Any]) -> list[tuple[str, str, Path]]:
    cpu = spec.get("cpu")
    if not cpu:
        return []
    problems: list[tuple[str, str, Path]] = []
    at: Path = ("spec", "cpu")
    mode = cpu["mode"]
    if mode == "custom" and "model" not in cpu:
        problems.append(("spec.cpu.model", "mode custom needs a model", at))
    if mode != "custom" and "model" in cpu:
        where: Path = (*at, "model")
        problems.append(("spec.cpu.model", f"goes with mode custom, not {mode}", where))
    if mode == "host-passthrough" and spec.get("type", "kvm") == "qemu":
        where = (*at, "mode")
        reason = "needs type kvm (QEMU's emulation, type qemu, has no host CPU to pass through)"
        problems.append(("spec.cpu.mode", reason, where))
    seen: dict[str, int] = {}
    for i, feature in enumerate(cpu.get("features", [])):
        first = seen.setdefault(feature["name"], i)
        if first != i:
            where = (*at, "features", i, "name")
            reason = f"{feature['name']!r} is already named by spec.cpu.features[{first}]"
            problems.append((schema.format_path(where), reason, where))
    return problems


def interface_problems(iface: Mapping[str, Any]) -> list[tuple[Path, str]]:
    """What is wrong with one interface's attachment: (path under it, reason)."""
    problems: list[tuple[Path, str]] = []
    given = [f for f in ("network", "bridge", "source") if f in iface]
    kind = iface.get("type") or ("network" if "network" in iface else "bridge")
    if len(given) != 1:
        return [((), "needs either network or bridge, or source with type direct or hostdev")]
    wants = {"network": "network", "bridge": "bridge", "direct": "source", "hostdev": "source"}
    if wants[kind] != given[0]:
        if given[0] == "source":
            return [(("type",), "must be direct or hostdev with source")]
        return [(("type",), f"{kind} does not go with {given[0]}")]
    if "virtualport" in iface and kind != "bridge":
        why = (
            "a network's own definition says whether it is Open vSwitch"
            if kind == "network"
            else f"a {kind} interface has no bridge port"
        )
        problems.append((("virtualport",), f"goes with bridge; {why}"))
    if "vlan" in iface and kind != "hostdev":
        problems.append((("vlan",), "goes with type hostdev (the VF's tag on the PF)"))
    source = iface.get("source") or {}
    if kind == "direct":
        if "dev" not in source:
            problems.append((("source",), "needs dev (the host NIC) for type direct"))
        if "address" in source:
            problems.append((("source", "address"), "goes with type hostdev, not direct"))
    elif kind == "hostdev":
        if "address" not in source:
            problems.append((("source",), "needs address (the VF's PCI address) for type hostdev"))
        for field in ("dev", "mode"):
            if field in source:
                problems.append((("source", field), "goes with type direct, not hostdev"))
        if iface.get("model", "virtio") != "virtio":
            problems.append(
                (("model",), "a hostdev interface has no model (the guest drives the VF)")
            )
        address = source.get("address")
        if isinstance(address, str) and _PCI.match(address):
            slot = int(address.split(":")[2].split(".")[0], 16)
            if slot > 0x1F:
                problems.append((("source", "address"), f"slot {slot:#04x} is above 0x1f"))
    return problems
