"""Interfaces attached directly, on the real libvirtd: a macvtap interface (``type:
direct``) on a host NIC made for the test, seen and used by the test guest, hot-plugged
and unplugged live; a ``type: hostdev`` SR-IOV VF (this machine has none) validated, round
tripped through libvirt's own definition, and waited for when the host lacks it.

The host NIC is one end of a veth pair (this kernel has no dummy driver), named with the
test's prefix and removed afterwards; the other end, with an address, stands for the LAN.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from guest_os import GuestImage, agent_answers, agent_command, guest_exec, guest_spec
from realstack import Controller, condition, domain_manifest, plan, wait_for

from kvmrec.api.domain_parts import derived_mac
from kvmrec.api.kinds import DomainSpec
from kvmrec.api.manifests import parse_file
from kvmrec.backends import domain_xml

pytestmark = pytest.mark.integration

BOOT = 90.0


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def host_nic(prefix: str) -> Iterator[tuple[str, str]]:
    """(the host NIC for macvtap, its veth peer): both up, the peer at 10.253.N.1/24."""
    nic, peer = f"kvmrec-t{prefix[-6:]}", f"kvmrec-p{prefix[-6:]}"
    _ip("link", "add", nic, "type", "veth", "peer", "name", peer)
    try:
        third = int(prefix[-2:], 16)
        _ip("addr", "add", f"10.253.{third}.1/24", "dev", peer)
        _ip("link", "set", nic, "up")
        _ip("link", "set", peer, "up")
        yield nic, peer
    finally:
        subprocess.run(["ip", "link", "del", nic], capture_output=True, timeout=30, check=False)


def _guest_nics(conn: Any, name: str) -> dict[str, str]:
    """The guest's interfaces by MAC, as its agent lists them."""
    found = agent_command(conn, name, {"execute": "guest-network-get-interfaces"}) or []
    return {i.get("hardware-address", ""): i["name"] for i in found if i["name"] != "lo"}


def _macvtaps_on(nic: str) -> list[str]:
    return sorted(p.name[len("upper_") :] for p in Path(f"/sys/class/net/{nic}").glob("upper_*"))


def test_a_macvtap_interface_comes_up_in_the_guest_and_is_hot_plugged(
    controller: Controller,
    conn: Any,
    prefix: str,
    guest_image: GuestImage,
    host_nic: tuple[str, str],
) -> None:
    nic, _peer = host_nic
    name = f"{prefix}-mv"
    first = {"name": "mv0", "type": "direct", "source": {"dev": nic, "mode": "bridge"}}
    controller.disk_roots.append(guest_image.dir)
    controller.write(
        f"{name}.yaml",
        domain_manifest(name, "qemu", **guest_spec(guest_image, name, interfaces=[first])),
    )
    controller.start()
    wait_for(lambda: agent_answers(conn, name), BOOT, "the agent answers")

    mac = derived_mac(name, "mv0")
    # libvirt made one macvtap device on the host NIC, and the guest has a NIC of that MAC.
    assert len(_macvtaps_on(nic)) == 1
    eth = wait_for(lambda: _guest_nics(conn, name).get(mac), 30, "the guest sees the NIC")

    def sh(command: str) -> tuple[int, str]:
        return guest_exec(conn, name, "/bin/sh", "-c", command)

    def operstate(ifname: str) -> str:
        code, out = guest_exec(conn, name, "/bin/cat", f"/sys/class/net/{ifname}/operstate")
        assert code == 0
        return out.strip()

    wait_for(lambda: operstate(eth) == "up", 30, "the guest's macvtap NIC is up")
    # And it carries traffic: the guest reaches the veth peer through the host NIC.
    third = int(prefix[-2:], 16)
    code, _ = sh(f"ip addr add 10.253.{third}.2/24 dev {eth}")
    assert code == 0
    code, out = sh(f"ping -c 3 -W 5 10.253.{third}.1")
    assert code == 0, out

    # The definition reads back as written: nothing to do.
    code, planned = plan(controller, f"Domain/{name}")
    assert code == 0, planned
    dom_id = conn.lookupByName(name).ID()

    # A second macvtap interface, added to the manifest, is plugged into the running guest.
    second = {"name": "mv1", "type": "direct", "source": {"dev": nic, "mode": "private"}}
    controller.write(
        f"{name}.yaml",
        domain_manifest(name, "qemu", **guest_spec(guest_image, name, interfaces=[first, second])),
    )
    mac2 = derived_mac(name, "mv1")
    eth2 = wait_for(lambda: _guest_nics(conn, name).get(mac2), 60, "the hot-plugged NIC")
    assert conn.lookupByName(name).ID() == dom_id  # no restart
    assert len(_macvtaps_on(nic)) == 2
    code, _ = sh(f"ip link set {eth2} up")
    assert code == 0
    wait_for(lambda: operstate(eth2) == "up", 30, "the hot-plugged NIC is up")
    live = domain_xml.parse(conn.lookupByName(name).XMLDesc(0))
    assert {(i.mac, i.dev, i.mode) for i in live.interfaces} == {
        (mac, nic, "bridge"),
        (mac2, nic, "private"),
    }

    # Taken out of the manifest again, it is unplugged live.
    controller.write(
        f"{name}.yaml",
        domain_manifest(name, "qemu", **guest_spec(guest_image, name, interfaces=[first])),
    )
    wait_for(lambda: mac2 not in _guest_nics(conn, name), 60, "the NIC unplugged")
    wait_for(lambda: len(_macvtaps_on(nic)) == 1, 30, "its macvtap device gone")
    assert conn.lookupByName(name).ID() == dom_id
    obj = wait_for(
        lambda: (o := controller.object(name)) and o["synced"] and not o["drift"] and o,
        60,
        "synced again",
    )
    assert condition(obj, "Ready")["status"] == "True"  # type: ignore[index]


def test_a_direct_interface_on_a_missing_host_nic_waits_for_it(
    controller: Controller, prefix: str
) -> None:
    name, nic = f"{prefix}-nonic", f"kvmrec-n{prefix[-6:]}"
    iface = {"name": "mv0", "type": "direct", "source": {"dev": nic}}
    controller.write(f"{name}.yaml", domain_manifest(name, "kvm", interfaces=[iface]))
    controller.start()
    obj = wait_for(
        lambda: (o := controller.object(name)) and condition(o, "Ready") and o,
        30,
        "a Ready condition",
    )
    ready = condition(obj, "Ready")
    assert ready is not None and ready["reason"] == "WaitingForDependency"
    assert f"host NIC {nic} does not exist" in ready["message"]


HOSTDEV = (
    "apiVersion: kvmrec.io/v1alpha1\nkind: Domain\nmetadata:\n  name: {name}\nspec:\n"
    "  memory: 64Mi\n  interfaces:\n"
    "  - name: vf0\n    type: hostdev\n    source: {{address: '{address}'}}\n"
    "    vlan: 42\n    mac: '52:54:00:12:34:56'\n"
)


def test_a_hostdev_interface_round_trips_through_libvirt_and_waits_for_its_vf(
    controller: Controller, conn: Any, prefix: str, tmp_path: Path
) -> None:
    # An address no device of this host has: never started, never bound to vfio.
    address = "0000:7e:1f.6"
    assert not Path(f"/sys/bus/pci/devices/{address}").exists()
    name = f"{prefix}-vf"
    [manifest] = parse_file("vf.yaml", HOSTDEV.format(name=name, address=address).encode())
    spec = DomainSpec.from_spec(manifest.spec, name)

    # libvirt keeps the definition as written (defined only: a start would need the VF).
    dom = conn.defineXML(domain_xml.build(name, spec, None))
    try:
        config = domain_xml.parse(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        [iface] = config.interfaces
        assert (iface.address, iface.vlan, iface.mac, iface.model) == (
            address,
            42,
            "52:54:00:12:34:56",
            "",
        )
        assert domain_xml.unmodelled(dom.XMLDesc(0)) == []
    finally:
        dom.undefine()

    # Validation names the file and the field.
    bad = tmp_path / "bad.yaml"
    bad.write_text(HOSTDEV.format(name=name, address="03:10.2"))
    done = subprocess.run(
        controller.command("validate", str(bad)),
        capture_output=True,
        text=True,
        env=controller.env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "bad.yaml" in done.stdout + done.stderr
    assert "spec.interfaces[0].source.address" in done.stdout + done.stderr
    assert "is not a PCI address" in done.stdout + done.stderr

    # Under kvmrec, a VF the host does not have is waited for, and nothing is defined.
    controller.write("vf.yaml", HOSTDEV.format(name=name, address=address))
    controller.start()
    obj = wait_for(
        lambda: (o := controller.object(name)) and condition(o, "Ready") and o,
        30,
        "a Ready condition",
    )
    ready = condition(obj, "Ready")
    assert ready is not None and ready["reason"] == "WaitingForDependency"
    assert f"PCI device {address} does not exist on this host" in ready["message"]
    assert name not in [d.name() for d in conn.listAllDomains(0)]
