"""In-memory fakes of the backends' Protocols (kvmrec/backends/protocols.py), for fast tests.

``FakeNetworks`` is a libvirt host's networks, ``FakeSnapshots`` its domains' snapshots and
``FakeOvsBridges`` an Open vSwitch; each behaves like the real backend where the reconcilers
rely on it (tests/support/contracts.py
holds both to the same checks): the definition or the row kept as written, so the
ownership stamp reads back; ``NotFound`` for what is not there; ``BackendError`` where
libvirt or OVSDB refuses. Beyond the real ones, a test can make every call raise
``Unavailable`` (``unavailable = True``: the daemon is down) or one operation fail once
(``fail``), and read which changes were made (``calls``).
"""

from __future__ import annotations

import itertools
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from kvmrec.backends import domain_xml, network_xml
from kvmrec.backends.errors import BackendError, NotFound, Unavailable
from kvmrec.backends.libvirt.live import LiveDomain, LiveNetwork
from kvmrec.backends.ovs.model import UNCHANGED, Bridge, BridgeChange, Port, minimal_change
from kvmrec.backends.snapshot_state import SnapshotInfo


class _Fake:
    """Outages and one-shot failures on demand, and a log of the changes made."""

    what = "the backend"

    def __init__(self) -> None:
        self.unavailable = False
        self.calls: list[tuple[str, ...]] = []
        self._failures: dict[str, BackendError] = {}

    def fail(self, operation: str, error: BackendError) -> None:
        """The next call of ``operation`` (a method name) raises ``error``."""
        self._failures[operation] = error

    def _enter(self, operation: str, *, daemon: bool = True) -> None:
        """Before each call: ``daemon`` False for one that does not go through the daemon."""
        if daemon and self.unavailable:
            raise Unavailable(f"{operation}: cannot reach {self.what}: connection refused")
        error = self._failures.pop(operation, None)
        if error is not None:
            raise error

    def _changed(self, operation: str, *args: str) -> None:
        self.calls.append((operation, *args))


# -- libvirt networks ------------------------------------------------------------------------


@dataclass
class _Network:
    xml: str  # the persistent definition
    active: bool = False
    autostart: bool = False
    running: str | None = None  # the running network's XML
    persistent: bool = True


class FakeNetworks(_Fake):
    """libvirt networks (``protocols.Networks``), kept as their XML."""

    what = "libvirt"

    def __init__(self) -> None:
        super().__init__()
        self.networks: dict[str, _Network] = {}

    def add_network(self, xml: str, *, active: bool = False) -> None:
        """A network someone else defined (and started): not one of ``calls``."""
        self.define_network(xml)  # given a UUID, as libvirt gives one
        self.calls.pop()
        net = self.networks[ET.fromstring(xml).findtext("name", "")]
        if active:
            net.active, net.running = True, net.xml

    def _get(self, name: str, operation: str) -> _Network:
        self._enter(operation)
        network = self.networks.get(name)
        if network is None:
            raise NotFound(
                f"{operation}: Network not found: no network with matching name '{name}'"
            )
        return network

    def get_network(self, name: str) -> LiveNetwork | None:
        self._enter("get_network")
        net = self.networks.get(name)
        if net is None:
            return None
        return LiveNetwork(
            config=network_xml.parse(net.xml),
            active=net.active,
            autostart=net.autostart,
            running=network_xml.parse(net.running) if net.running else None,
        )

    def network_xml(self, name: str) -> str:
        return self._get(name, "network_xml").xml

    def network_active(self, name: str) -> bool | None:
        self._enter("network_active")
        net = self.networks.get(name)
        return None if net is None else net.active

    def define_network(self, xml: str) -> None:
        self._enter("define_network")
        root = ET.fromstring(xml)
        name = root.findtext("name", "")
        old = self.networks.get(name)
        given = root.findtext("uuid")
        have = network_xml.parse(old.xml).uuid if old is not None else None
        if given and have and given != have:
            raise BackendError(f"network '{name}' is already defined with uuid {have}")
        for other, net in self.networks.items():
            if given and other != name and network_xml.parse(net.xml).uuid == given:
                raise BackendError(f"network '{other}' is already defined with uuid {given}")
        if not given:  # libvirt keeps a network's UUID, or makes one up
            element = root.find("uuid")
            if element is None:
                element = ET.Element("uuid")
                root.insert(1, element)
            element.text = have or str(uuid.uuid4())
        definition = ET.tostring(root, encoding="unicode")
        if old is None:
            self.networks[name] = _Network(definition)
        else:
            old.xml, old.persistent = definition, True
        self._changed("define_network", name)

    def start_network(self, name: str) -> None:
        net = self._get(name, "start_network")
        if net.active:
            raise BackendError(
                f"start network {name}: Requested operation is not valid: network is already active"
            )
        net.active, net.running = True, net.xml
        self._changed("start_network", name)

    def stop_network(self, name: str) -> None:
        net = self._get(name, "stop_network")
        if net.active:
            net.active, net.running = False, None
            if not net.persistent:
                del self.networks[name]
            self._changed("stop_network", name)

    def undefine_network(self, name: str) -> None:
        net = self._get(name, "undefine_network")
        if net.active:  # a running network stays, transient, until it stops
            net.persistent, net.autostart = False, False
        else:
            del self.networks[name]
        self._changed("undefine_network", name)

    def set_network_autostart(self, name: str, enabled: bool) -> None:
        net = self._get(name, "set_network_autostart")
        if not net.persistent:
            raise BackendError(
                f"set autostart of network {name}: cannot set autostart for transient network"
            )
        net.autostart = enabled
        self._changed("set_network_autostart", name, str(enabled))

    def update_dhcp_host(self, name: str, host_xml: str, *, add: bool, live: bool) -> None:
        net = self._get(name, "update_dhcp_host")
        if live and not net.active:
            raise BackendError(f"update DHCP hosts of network {name}: network is not running")
        host = ET.fromstring(host_xml)
        net.xml = _updated_hosts(name, net.xml, host, add)
        if live and net.running is not None:
            net.running = _updated_hosts(name, net.running, host, add)
        self._changed("update_dhcp_host", name, "add" if add else "delete", host.get("mac", ""))


def _updated_hosts(name: str, xml: str, host: ET.Element, add: bool) -> str:
    """``xml`` with ``host`` added to or deleted from its IPv4 DHCP hosts, as libvirt's
    virNetworkUpdate does it (and refuses it)."""
    root = ET.fromstring(xml)
    dhcp = next(
        (ip.find("dhcp") for ip in root.findall("ip") if ip.get("family", "ipv4") == "ipv4"),
        None,
    )
    if dhcp is None:
        raise BackendError(f"update DHCP hosts of network {name}: no IPv4 dhcp range is defined")
    mac, ip = (host.get("mac") or "").lower(), host.get("ip")
    matching = [
        h for h in dhcp.findall("host") if (h.get("mac") or "").lower() == mac or h.get("ip") == ip
    ]
    if add:
        if matching:
            raise BackendError(
                f"update DHCP hosts of network {name}: there is an existing dhcp host entry "
                "that matches"
            )
        dhcp.append(host)
    else:
        exact = [h for h in matching if (h.get("mac") or "").lower() == mac and h.get("ip") == ip]
        if not exact:
            raise BackendError(
                f"update DHCP hosts of network {name}: couldn't locate a matching dhcp host entry"
            )
        dhcp.remove(exact[0])
    return ET.tostring(root, encoding="unicode")


# -- libvirt snapshots -----------------------------------------------------------------------


@dataclass
class _Domain:
    running: bool = False
    agent: bool = False  # qemu-ga answers in the guest
    frozen: bool = False
    snapshots: dict[str, SnapshotInfo] = field(default_factory=dict)


class FakeSnapshots(_Fake):
    """Domains with their internal snapshots (``protocols.SnapshotHost``).

    ``add_domain`` makes a domain (running or not, with an agent that answers or not);
    ``now`` stamps each new snapshot (libvirt's creation time, in whole seconds).
    """

    what = "libvirt"

    def __init__(self, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        super().__init__()
        self.domains: dict[str, _Domain] = {}
        self._now = now

    def add_domain(self, name: str, *, running: bool = False, agent: bool = False) -> None:
        self.domains[name] = _Domain(running=running, agent=agent)

    def _domain(self, name: str, operation: str) -> _Domain:
        self._enter(operation)
        domain = self.domains.get(name)
        if domain is None:
            raise NotFound(f"{operation}: Domain not found: no domain with matching name '{name}'")
        return domain

    def get_domain(self, name: str) -> LiveDomain | None:
        self._enter("get_domain")
        domain = self.domains.get(name)
        if domain is None:
            return None
        xml = f"<domain type='kvm'><name>{name}</name><memory unit='KiB'>65536</memory></domain>"
        state = "running" if domain.running else "shutoff"
        reason = "booted" if domain.running else "destroyed"
        return LiveDomain(domain_xml.parse(xml), state, reason, False, (xml, False, False))

    def list_snapshots(self, name: str) -> list[SnapshotInfo]:
        snapshots = self._domain(name, "list_snapshots").snapshots.values()
        return sorted(snapshots, key=lambda s: s.time, reverse=True)

    def get_snapshot(self, name: str, snapshot: str) -> SnapshotInfo:
        found = self._domain(name, "get_snapshot").snapshots.get(snapshot)
        if found is None:
            raise NotFound(f"get_snapshot: Domain snapshot not found: no snapshot '{snapshot}'")
        return found

    def create_snapshot(self, name: str, snapshot: str, description: str) -> None:
        domain = self._domain(name, "create_snapshot")
        if snapshot in domain.snapshots:
            raise BackendError(f"snapshot {name}: domain snapshot '{snapshot}' already exists")
        state = "running" if domain.running else "shutoff"
        when = self._now().replace(microsecond=0)
        domain.snapshots[snapshot] = SnapshotInfo(
            snapshot, when, description, state, memory=domain.running
        )
        self._changed("create_snapshot", name, snapshot)

    def delete_snapshot(self, name: str, snapshot: str) -> None:
        self.get_snapshot(name, snapshot)
        del self.domains[name].snapshots[snapshot]
        self._changed("delete_snapshot", name, snapshot)

    def revert_snapshot(self, name: str, snapshot: str, *, running: bool | None) -> None:
        taken = self.get_snapshot(name, snapshot)
        domain = self.domains[name]
        domain.running = taken.state == "running" if running is None else running
        domain.frozen = False
        self._changed("revert_snapshot", name, snapshot)

    def freeze(self, name: str) -> int:
        domain = self._domain(name, "freeze")
        if not domain.running:
            raise BackendError(f"freeze file systems of {name}: domain is not running")
        if not domain.agent:
            raise BackendError(f"freeze file systems of {name}: Guest agent is not responding")
        domain.frozen = True
        self._changed("freeze", name)
        return 1

    def thaw(self, name: str) -> None:
        domain = self._domain(name, "thaw")
        if not domain.running:
            raise BackendError(f"thaw file systems of {name}: domain is not running")
        domain.frozen = False
        self._changed("thaw", name)


# -- Open vSwitch ----------------------------------------------------------------------------


class FakeOvsBridges(_Fake):
    """Open vSwitch bridges (``protocols.OvsBridges``) and the devices of the host.

    A bridge comes with its own internal port, as in OVS; a system port opens when its
    device is in ``devices`` and otherwise gets OVS's error and ofport -1. ``kernel`` is
    whether the kernel datapath is there; ``promisc`` the flag of each bridge device.
    """

    what = "ovsdb-server"

    def __init__(self, *, kernel: bool = False, devices: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.bridges: dict[str, Bridge] = {}
        self.kernel = kernel
        self.devices = set(devices)
        self.promisc: dict[str, bool] = {}
        self._ofports = itertools.count(1)

    def get_bridge(self, name: str) -> Bridge | None:
        self._enter("get_bridge")
        return self.bridges.get(name)

    def apply(self, change: BridgeChange) -> None:
        self._enter("apply")
        port_bridges = {p: b.name for b in self.bridges.values() for p in b.ports}
        todo = minimal_change(change, self.bridges.get(change.name), port_bridges)
        if todo.empty:
            return
        name = todo.name
        bridge = self.bridges.get(name)
        if bridge is None:
            bridge = Bridge(name, "", None, {}, {name: self._port(name, "internal", derived=True)})
            # ovs-vswitchd sets the tap of a netdev bridge promiscuous itself.
            self.promisc[name] = todo.datapath_type == "netdev"
        ids = {k: v for k, v in bridge.external_ids.items() if k not in todo.remove_external_ids}
        ids.update(todo.set_external_ids)
        ports = {p: port for p, port in bridge.ports.items() if p not in todo.remove_ports}
        for port, kind in todo.add_ports:
            ports[port] = self._port(port, kind)
        self.bridges[name] = replace(
            bridge,
            datapath_type=bridge.datapath_type
            if todo.datapath_type is None
            else todo.datapath_type,
            fail_mode=bridge.fail_mode if todo.fail_mode is UNCHANGED else todo.fail_mode,
            external_ids=ids,
            ports=ports,
        )
        self._changed("apply", name)

    def _port(self, name: str, kind: str, *, derived: bool = False) -> Port:
        if kind in ("", "system") and name not in self.devices:
            error = f"could not open network device {name} (No such device)"
            return Port(name, "", {}, derived, -1, error)
        return Port(name, kind, {}, derived, next(self._ofports), None)

    def delete_bridge(self, name: str) -> None:
        self._enter("delete_bridge")
        if self.bridges.pop(name, None) is not None:
            self.promisc.pop(name, None)
            self._changed("delete_bridge", name)

    def kernel_datapath(self) -> bool:
        return self.kernel

    def promiscuous(self, name: str) -> bool | None:
        return self.promisc.get(name)

    def set_promiscuous(self, name: str, on: bool) -> None:
        self._enter("set_promiscuous", daemon=False)  # the kernel's, not OVSDB's
        if name not in self.promisc:
            raise NotFound(f"network device {name} does not exist")
        self.promisc[name] = on
        self._changed("set_promiscuous", name, str(on))

    def plug_guest_port(self, bridge: str, port: str, vm_id: str) -> None:
        """A port as libvirt plugs it for a running guest (derived: not kvmrec's)."""
        old = self.bridges[bridge]
        plugged = Port(port, "", {"vm-id": vm_id}, True, next(self._ofports), None)
        self.bridges[bridge] = replace(old, ports={**old.ports, port: plugged})
