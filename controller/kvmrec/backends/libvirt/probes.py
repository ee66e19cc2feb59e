"""What libvirtd says about the host, for the host checks (``kvmrec doctor``).

Versions, the guest types the capabilities offer, a network's state, and one experiment:
whether a guest with a given CPU mode really starts. That one is a tiny transient guest
(no disk, no devices, 32 MiB) named ``kvmrec-doctor-<random>``, started with
``VIR_DOMAIN_START_AUTODESTROY`` (libvirt destroys it if this connection goes, even if
kvmrec is killed) and destroyed at once; being transient, nothing of it is left defined.
"""

from __future__ import annotations

import contextlib
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import libvirt

from kvmrec.backends.errors import BackendError
from kvmrec.backends.libvirt.connection import OnConnection

PROBE_PREFIX = "kvmrec-doctor-"

# A failure that shows only once the vCPU runs (QEMU's "failed to set MSR" assertion on some
# nested hosts) stops the guest within a moment of its start: look again after this long.
_SETTLE = 0.3


@dataclass(frozen=True)
class LibvirtFacts:
    uri: str
    libvirt_version: str  # of the daemon
    hypervisor: str  # "QEMU"
    hypervisor_version: str
    hostname: str
    domain_types: tuple[str, ...]  # guest types for x86_64 hvm guests: "kvm", "qemu"


@dataclass(frozen=True)
class NetworkFacts:
    name: str
    active: bool
    autostart: bool
    forward: str | None  # nat, route, bridge, ...; None: isolated
    bridge: str | None
    address: str | None  # "192.168.122.1/24"


def _version(number: int) -> str:
    return f"{number // 1000000}.{number // 1000 % 1000}.{number % 1000}"


class HostProbes(OnConnection):
    """The host checks' questions to libvirtd, on one connection."""

    def facts(self) -> LibvirtFacts:
        with self._call("read the daemon's versions and capabilities") as conn:
            caps = conn.getCapabilities()
            facts = LibvirtFacts(
                uri=conn.getURI(),
                libvirt_version=_version(conn.getLibVersion()),
                hypervisor=conn.getType(),
                hypervisor_version=_version(conn.getVersion()),
                hostname=conn.getHostname(),
                domain_types=_domain_types(caps),
            )
        return facts

    def network(self, name: str) -> NetworkFacts | None:
        """The network ``name``; None when libvirt has none of that name."""
        with self._call(f"read network {name}") as conn:
            try:
                net = conn.networkLookupByName(name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                    return None
                raise
            root = ET.fromstring(net.XMLDesc(0))
            active, autostart = bool(net.isActive()), bool(net.autostart())
        forward = root.find("forward")
        bridge = root.find("bridge")
        ip = root.find("ip")
        address = None
        if ip is not None and ip.get("address"):
            prefix = ip.get("prefix") or ip.get("netmask")
            address = f"{ip.get('address')}/{prefix}" if prefix else ip.get("address")
        return NetworkFacts(
            name=name,
            active=active,
            autostart=autostart,
            forward=(forward.get("mode") or "nat") if forward is not None else None,
            bridge=bridge.get("name") if bridge is not None else None,
            address=address,
        )

    def cpu_starts(self, mode: str, domain_type: str = "kvm") -> str | None:
        """Start and destroy a tiny guest with ``<cpu mode=MODE/>``: None when it ran,
        else libvirt's (or QEMU's) reason."""
        name = f"{PROBE_PREFIX}{uuid.uuid4().hex[:8]}"
        xml = (
            f"<domain type='{domain_type}'><name>{name}</name>"
            "<memory unit='MiB'>32</memory><vcpu>1</vcpu>"
            "<os><type arch='x86_64'>hvm</type></os>"
            f"<cpu mode='{mode}'/><on_crash>destroy</on_crash>"
            "<devices><memballoon model='none'/></devices></domain>"
        )
        try:
            with self._call(f"start a {mode} test guest") as conn:
                dom = conn.createXML(xml, libvirt.VIR_DOMAIN_START_AUTODESTROY)
                try:
                    time.sleep(_SETTLE)
                    alive = _active(dom)
                finally:
                    with contextlib.suppress(libvirt.libvirtError):
                        dom.destroy()
        except BackendError as exc:
            return str(exc)
        return None if alive else f"{name} stopped right after its start (see its QEMU log)"


def _active(dom: libvirt.virDomain) -> bool:
    try:
        return bool(dom.isActive())
    except libvirt.libvirtError:  # a transient guest that stopped is gone
        return False


def _domain_types(caps: str) -> tuple[str, ...]:
    root = ET.fromstring(caps)
    types: set[str] = set()
    for guest in root.findall("guest"):
        if guest.findtext("os_type") != "hvm":
            continue
        arch = guest.find("arch")
        if arch is None or arch.get("name") != "x86_64":
            continue
        types.update(d.get("type", "") for d in arch.findall("domain"))
    return tuple(sorted(t for t in types if t))
