"""Networks on qemu:///system: NAT with DHCP, live lease updates, adoption, dependencies
between domains and networks in both directions, and an Open vSwitch-backed network."""

from __future__ import annotations

import contextlib
import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import libvirt
import pytest
from realstack import Controller, condition, ovs_ports, plan_text, state_of, wait_for

from kvmrec.backends.libvirt.hypervisor import Hypervisor
from support import contracts

pytestmark = pytest.mark.integration


def write(
    ctl: Controller, filename: str, kind: str, name: str, spec: dict[str, Any], **meta: Any
) -> None:
    if kind == "Domain":
        spec = {"type": ctl.stack["KVMREC_DOMAIN_TYPE"], "memory": "64Mi", **spec}
    document = {
        "apiVersion": "kvmrec.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, **meta},
        "spec": spec,
    }
    ctl.write(filename, json.dumps(document))


def nat_spec(prefix: str, subnet: int, **extra: Any) -> dict[str, Any]:
    return {
        "forward": "nat",
        "bridge": f"{prefix}-b"[:15],
        "ip": {
            "address": f"10.253.{subnet}.1",
            "prefix": 24,
            "dhcp": {"start": f"10.253.{subnet}.10", "end": f"10.253.{subnet}.99", **extra},
        },
    }


def net_state(conn: Any, name: str) -> tuple[bool, bool] | None:
    try:
        net = conn.networkLookupByName(name)
        return bool(net.isActive()), bool(net.autostart())
    except libvirt.libvirtError:
        return None  # not there, or removed between the two calls


def dnsmasq_pid(name: str) -> int | None:
    pid_file = Path(f"/run/libvirt/network/{name}.pid")
    return int(pid_file.read_text()) if pid_file.exists() else None


@pytest.fixture
def networks(controller: Controller, prefix: str, stack: dict[str, str]) -> Any:
    yield
    controller.stop()  # first, or it would heal what is removed here
    cleanup = libvirt.open(stack["LIBVIRT_DEFAULT_URI"])
    for net in cleanup.listAllNetworks(0):
        if net.name().startswith(prefix):
            if net.isActive():
                net.destroy()
            net.undefine()
    cleanup.close()


def test_nat_network_with_dhcp_is_active_autostarted_and_leases_change_live(
    controller: Controller, conn: Any, prefix: str, networks: None
) -> None:
    name = f"{prefix}-nat"
    hosts = [{"mac": "52:54:00:00:00:01", "ip": "10.253.11.5", "name": "one"}]
    write(controller, "nat.yaml", "Network", name, nat_spec(prefix, 11, hosts=hosts))
    controller.start()
    wait_for(lambda: net_state(conn, name) == (True, True), 20, "active and autostarted")
    pid = wait_for(lambda: dnsmasq_pid(name), 10, "dnsmasq serves it")
    root = ET.fromstring(conn.networkLookupByName(name).XMLDesc(0))
    assert root.find("forward").get("mode") == "nat"  # type: ignore[union-attr]
    assert root.find("ip/dhcp/range").get("start") == "10.253.11.10"  # type: ignore[union-attr]

    hosts.append({"mac": "52:54:00:00:00:02", "ip": "10.253.11.6", "name": "two"})
    write(controller, "nat.yaml", "Network", name, nat_spec(prefix, 11, hosts=hosts))
    wait_for(
        lambda: (
            len(ET.fromstring(conn.networkLookupByName(name).XMLDesc(0)).findall("ip/dhcp/host"))
            == 2
        ),
        15,
        "second lease",
    )
    hostsfile = Path(f"/var/lib/libvirt/dnsmasq/{name}.hostsfile").read_text()
    assert "52:54:00:00:00:02" in hostsfile, "dnsmasq was told"
    assert dnsmasq_pid(name) == pid, "a lease change does not restart the network"
    obj = wait_for(
        lambda: (o := controller.object(name, "Network")) and o["observedGeneration"] == 2 and o,
        10,
        "generation 2",
    )
    assert obj["ready"] and obj["synced"] and obj["drift"] == []


def test_a_network_stopped_by_hand_is_started_again(
    controller: Controller, conn: Any, prefix: str, networks: None
) -> None:
    name = f"{prefix}-heal"
    write(controller, "n.yaml", "Network", name, nat_spec(prefix, 12))
    controller.start(resync=300)
    wait_for(lambda: net_state(conn, name) == (True, True), 20, "active")
    conn.networkLookupByName(name).destroy()
    wait_for(lambda: net_state(conn, name) == (True, True), 10, "healed from the event")


def test_a_change_that_needs_a_restart_is_planned_and_applied(
    controller: Controller, conn: Any, prefix: str, networks: None
) -> None:
    name = f"{prefix}-rng"
    write(controller, "n.yaml", "Network", name, nat_spec(prefix, 13))
    controller.start()
    wait_for(lambda: (o := controller.object(name, "Network")) and o["ready"], 20, "ready")
    controller.stop()
    spec = nat_spec(prefix, 13)
    spec["ip"]["dhcp"]["end"] = "10.253.13.50"
    write(controller, "n.yaml", "Network", name, spec)
    done = plan_text(controller, "-o", "json")
    assert done.returncode == 2
    actions = {c["action"] for c in json.loads(done.stdout)["changes"]}
    assert actions == {"update", "restart"}
    controller.start()
    wait_for(
        lambda: (
            ET.fromstring(conn.networkLookupByName(name).XMLDesc(0))
            .find("ip/dhcp/range")
            .get("end")
            == "10.253.13.50"
        ),
        15,
        "new range live",
    )  # type: ignore[union-attr]


def test_domain_first_then_network_converges_without_errors_left(
    controller: Controller, conn: Any, prefix: str, networks: None
) -> None:
    net, dom = f"{prefix}-late", f"{prefix}-early"
    write(controller, "dom.yaml", "Domain", dom, {"interfaces": [{"name": "lan", "network": net}]})
    controller.start()
    obj = wait_for(lambda: (o := controller.object(dom)) and o["conditions"] and o, 15, "status")
    ready = condition(obj, "Ready")
    assert ready is not None and ready["reason"] == "WaitingForDependency"
    assert net in ready["message"]
    assert obj["lastError"] is None, "waiting is not an error"

    write(controller, "net.yaml", "Network", net, nat_spec(prefix, 14))
    wait_for(lambda: state_of(conn, dom) == "running", 20, "domain started once the net is up")
    code, body = controller.status()
    assert code == 0 and body["errors"] == [], body
    assert all(o["lastError"] is None and o["retries"] == 0 for o in body["objects"])


def test_removing_a_network_in_use_is_refused_until_its_domains_are_gone(
    controller: Controller, conn: Any, prefix: str, networks: None
) -> None:
    net, dom = f"{prefix}-used", f"{prefix}-user"
    write(controller, "net.yaml", "Network", net, nat_spec(prefix, 15))
    write(controller, "dom.yaml", "Domain", dom, {"interfaces": [{"name": "lan", "network": net}]})
    write(controller, "keep.yaml", "Domain", f"{prefix}-other", {})  # keeps the guard calm
    controller.start()
    wait_for(lambda: state_of(conn, dom) == "running", 30, "domain running")

    controller.remove("net.yaml")
    obj = wait_for(
        lambda: (
            (o := controller.object(net, "Network"))
            and o["deleting"]
            and (c := condition(o, "Synced"))
            and c["reason"] == "InUse"
            and o
        ),
        15,
        "deletion held",
    )
    assert f"Domain/{dom}" in condition(obj, "Synced")["message"]  # type: ignore[index]
    assert net_state(conn, net) == (True, True), "still there and running"

    controller.remove("dom.yaml")
    wait_for(lambda: net_state(conn, net) is None, 30, "network removed after its domain")
    assert state_of(conn, dom) is None


def test_adopting_a_host_network_to_switch_it_off(
    controller: Controller, conn: Any, prefix: str, networks: None
) -> None:
    name = f"{prefix}-def"
    xml = (
        f"<network><name>{name}</name><forward mode='nat'/><bridge name='{prefix}-d'/>"
        "<ip address='10.253.16.1' netmask='255.255.255.0'><dhcp>"
        "<range start='10.253.16.2' end='10.253.16.254'/></dhcp></ip></network>"
    )
    net = conn.networkDefineXML(xml)
    net.create()
    net.setAutostart(1)
    before = ET.fromstring(net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)).find("ip")

    write(
        controller,
        "def.yaml",
        "Network",
        name,
        {"active": False, "autostart": False},
        annotations={"kvmrec.io/adopt": "true"},
    )
    controller.start()
    wait_for(lambda: net_state(conn, name) == (False, False), 20, "switched off")
    after = ET.fromstring(conn.networkLookupByName(name).XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE))
    assert ET.tostring(after.find("ip")) == ET.tostring(before), "addressing left as it was"
    assert after.find("metadata/{https://kvmrec.io/xmlns/owner/v1alpha1}owner") is not None
    obj = wait_for(
        lambda: (o := controller.object(name, "Network")) and o["synced"] and o, 10, "synced"
    )
    assert obj["ready"]


def test_an_unowned_network_of_the_same_name_is_a_conflict(
    controller: Controller, conn: Any, prefix: str, networks: None
) -> None:
    name = f"{prefix}-thr"
    conn.networkDefineXML(f"<network><name>{name}</name><bridge name='{prefix}-t'/></network>")
    write(controller, "n.yaml", "Network", name, nat_spec(prefix, 17))
    controller.start()
    obj = wait_for(
        lambda: (o := controller.object(name, "Network")) and o["conditions"] and o, 15, "status"
    )
    assert condition(obj, "Ready")["reason"] == "Conflict"  # type: ignore[index]
    assert net_state(conn, name) == (False, False), "left alone"


def test_an_ovs_backed_network_puts_the_guest_port_on_the_bridge(
    controller: Controller, conn: Any, prefix: str, networks: None, ovs_bridge: str
) -> None:
    net, dom = f"{prefix}-ovsn", f"{prefix}-ovsg"
    write(
        controller,
        "net.yaml",
        "Network",
        net,
        {"forward": "bridge", "bridge": ovs_bridge, "virtualport": "openvswitch"},
    )
    write(controller, "dom.yaml", "Domain", dom, {"interfaces": [{"name": "lan", "network": net}]})
    controller.start()
    wait_for(lambda: state_of(conn, dom) == "running", 30, "guest running")
    ports = wait_for(lambda: ovs_ports(ovs_bridge), 10, "guest port on the bridge")
    vm_id = (
        subprocess.run(
            ["ovs-vsctl", "get", "Interface", ports[0], "external_ids:vm-id"],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .strip('"')
    )
    assert vm_id == conn.lookupByName(dom).UUIDString()


def test_libvirt_networks_do_what_their_fake_does(prefix: str, stack: dict[str, str]) -> None:
    """The checks FakeNetworks passes (tests/support/contracts.py), on the real libvirt."""
    name = f"{prefix}-ct"
    hv = Hypervisor(stack["LIBVIRT_DEFAULT_URI"])
    hv.open()
    try:
        contracts.check_networks(hv, name, f"{prefix}-cb", f"10.253.{int(prefix[-2:], 16)}")
    finally:
        hv.close()
        cleanup = libvirt.open(stack["LIBVIRT_DEFAULT_URI"])
        with contextlib.suppress(libvirt.libvirtError):
            cleanup.networkLookupByName(name).destroy()
        with contextlib.suppress(libvirt.libvirtError):
            cleanup.networkLookupByName(name).undefine()
        cleanup.close()
