"""Domains in full on qemu:///system: disks, clones, interfaces, change classes, plan,
import, and surviving a libvirtd restart."""

from __future__ import annotations

import json
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import libvirt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from realstack import (
    REPO,
    Controller,
    condition,
    ovs_ports,
    plan,
    qemu_img_info,
    remove_domains,
    run_once,
    state_of,
    wait_for,
)

from kvmrec.api.domain_parts import Disk, Graphics, Interface, derived_mac
from kvmrec.api.kinds import DomainSpec
from kvmrec.backends import domain_xml
from kvmrec.reconcilers.domain import diff_config

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
OWNER_NS = "https://kvmrec.io/xmlns/owner/v1alpha1"


def write_domain(
    ctl: Controller, filename: str, name: str, spec: dict[str, Any], **meta: Any
) -> None:
    document = {
        "apiVersion": "kvmrec.io/v1alpha1",
        "kind": "Domain",
        "metadata": {"name": name, **meta},
        "spec": {"type": ctl.stack["KVMREC_DOMAIN_TYPE"], "memory": "64Mi", **spec},
    }
    ctl.write(filename, json.dumps(document))


def live_xml(conn: Any, name: str) -> ET.Element:
    return ET.fromstring(conn.lookupByName(name).XMLDesc(0))


def qemu_io(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-io", *args], capture_output=True, text=True, check=False)


def sha(path: Path) -> str:
    done = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True)
    return done.stdout.split()[0]


def test_guest_with_a_created_disk_a_cdrom_a_network_and_an_ovs_bridge(
    controller: Controller,
    conn: Any,
    prefix: str,
    network: str,
    ovs_bridge: str,
    tmp_path: Path,
) -> None:
    name = f"{prefix}-full"
    disk, iso = tmp_path / "root.qcow2", tmp_path / "seed.iso"
    iso.write_bytes(b"\0" * 2048 * 32)
    write_domain(
        controller,
        "full.yaml",
        name,
        {
            "guestAgent": True,
            "graphics": {"type": "vnc", "listen": "127.0.0.1"},
            "disks": [{"path": str(disk), "size": "16Mi"}, {"path": str(iso), "device": "cdrom"}],
            "interfaces": [
                {"name": "lan", "network": network},
                {"name": "ovs", "bridge": ovs_bridge, "virtualport": "openvswitch"},
            ],
        },
    )
    controller.start()
    wait_for(lambda: state_of(conn, name) == "running", 30, "running")

    info = qemu_img_info(disk)
    assert (info["format"], info["virtual-size"]) == ("qcow2", 16 * MiB)
    root = live_xml(conn, name)
    cdrom = root.find("devices/disk[@device='cdrom']")
    assert cdrom is not None and cdrom.find("readonly") is not None
    macs = [m.get("address") for m in root.findall("devices/interface/mac")]
    assert macs == [derived_mac(name, "lan"), derived_mac(name, "ovs")]
    assert root.find("devices/channel/target[@name='org.qemu.guest_agent.0']") is not None
    assert root.find("devices/graphics[@type='vnc']") is not None

    ports = wait_for(lambda: ovs_ports(ovs_bridge), 10, "a vnet port on the OVS bridge")
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
    assert vm_id == conn.lookupByName(name).UUIDString()

    obj = wait_for(lambda: (o := controller.object(name)) and o["synced"] and o, 15, "synced")
    assert obj["drift"] == [] and obj["ready"]
    controller.stop()
    code, body = plan(controller)
    assert (code, body["changes"]) == (0, []), body


def test_a_linked_clone_and_a_full_clone_boot_side_by_side(
    controller: Controller, conn: Any, prefix: str, tmp_path: Path
) -> None:
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    assert qemu_io("-f", "qcow2", "-c", "write -P 0x5a 0 64k", str(base)).returncode == 0
    before = sha(base)
    linked, full = tmp_path / "linked.qcow2", tmp_path / "full.qcow2"
    write_domain(
        controller,
        "linked.yaml",
        f"{prefix}-linked",
        {"disks": [{"path": str(linked), "backingImage": str(base)}]},
    )
    write_domain(
        controller,
        "full.yaml",
        f"{prefix}-copy",
        {"disks": [{"path": str(full), "cloneFrom": {"path": str(base)}}]},
    )
    controller.start()
    for name in (f"{prefix}-linked", f"{prefix}-copy"):
        wait_for(lambda n=name: state_of(conn, n) == "running", 30, f"{name} running")

    assert qemu_img_info(linked)["backing-filename"] == str(base)
    assert "backing-filename" not in qemu_img_info(full), "a full clone shares nothing"
    for image in (linked, full):
        read = qemu_io("-U", "-r", "-f", "qcow2", "-c", "read -P 0x5a 0 64k", str(image))
        assert read.returncode == 0 and "Pattern verification failed" not in read.stdout
    assert sha(base) == before, "the base image is never written"
    a, b = conn.lookupByName(f"{prefix}-linked"), conn.lookupByName(f"{prefix}-copy")
    assert a.UUIDString() != b.UUIDString()


def test_hand_edits_show_in_plan_and_are_healed(
    controller: Controller, conn: Any, prefix: str
) -> None:
    name = f"{prefix}-edit"
    write_domain(controller, "edit.yaml", name, {"vcpus": 1, "maxVcpus": 2})
    assert run_once(controller).returncode == 0
    assert plan(controller) == (0, {"changes": [], "errors": []})

    # `virsh edit` and `virsh autostart` by hand:
    dom = conn.lookupByName(name)
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).replace("current='1'", "current='2'")
    conn.defineXML(xml)
    dom.setAutostart(1)
    code, body = plan(controller)
    assert code == 2
    fields = {f["field"]: f for c in body["changes"] for f in c["fields"]}
    assert fields["spec.vcpus"]["desired"] == 1 and fields["spec.vcpus"]["actual"] == 2
    assert fields["spec.autostart"]["actual"] is True
    assert {c["action"] for c in body["changes"]} == {"update", "autostart"}

    assert run_once(controller).returncode == 0
    assert plan(controller) == (0, {"changes": [], "errors": []})
    inactive = ET.fromstring(conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert inactive.find("vcpu").get("current") == "1"  # type: ignore[union-attr]
    assert conn.lookupByName(name).autostart() == 0


def test_live_changes_are_hot_plugged_without_a_restart(
    controller: Controller, conn: Any, prefix: str, network: str, ovs_bridge: str
) -> None:
    name = f"{prefix}-hot"
    spec = {"vcpus": 1, "maxVcpus": 4, "interfaces": [{"name": "lan", "network": network}]}
    write_domain(controller, "hot.yaml", name, spec)
    controller.start()
    wait_for(lambda: (o := controller.object(name)) and o["ready"] and o["synced"], 30, "ready")
    first = conn.lookupByName(name).ID()

    spec["vcpus"] = 2
    spec["interfaces"] = [
        {"name": "lan", "network": network},
        {"name": "ovs", "bridge": ovs_bridge, "virtualport": "openvswitch"},
    ]
    write_domain(controller, "hot.yaml", name, spec)
    obj = wait_for(
        lambda: (o := controller.object(name)) and o["observedGeneration"] == 2 and o, 15, "gen 2"
    )
    dom = conn.lookupByName(name)
    assert dom.ID() == first, "applied live: the guest was not restarted"
    assert dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE) == 2
    assert len(live_xml(conn, name).findall("devices/interface")) == 2
    assert obj["synced"] and obj["drift"] == []
    restart = condition(obj, "RestartRequired")
    assert restart is None or restart["status"] == "False"
    assert wait_for(lambda: ovs_ports(ovs_bridge), 10, "hot-plugged port on the OVS bridge")


def test_a_live_change_the_guest_refuses_stays_in_status_until_a_restart(
    controller: Controller, conn: Any, prefix: str
) -> None:
    name = f"{prefix}-cpu"
    write_domain(controller, "cpu.yaml", name, {"vcpus": 1, "maxVcpus": 4})
    controller.start(resync=1)
    wait_for(lambda: (o := controller.object(name)) and o["ready"] and o["synced"], 30, "ready")
    conn.lookupByName(name).setVcpusFlags(2, libvirt.VIR_DOMAIN_AFFECT_LIVE)  # by hand

    # A guest without an OS cannot give a vCPU back: the drift stays, named.
    obj = wait_for(lambda: (o := controller.object(name)) and o["drift"] and o, 15, "drift seen")
    assert {"field": "spec.vcpus", "desired": 1, "actual": 2} in obj["drift"]
    restart = condition(obj, "RestartRequired")
    assert restart is not None and restart["status"] == "True"
    assert "spec.vcpus" in restart["message"]
    code, _ = controller.status()
    assert code == 2

    first = conn.lookupByName(name).ID()
    write_domain(controller, "cpu.yaml", name, {"vcpus": 1, "maxVcpus": 4, "restartPolicy": "Auto"})
    obj = wait_for(
        lambda: (
            (o := controller.object(name))
            and o["synced"]
            and not o["drift"]
            and o["observedGeneration"] == 2
            and o
        ),
        20,
        "healed by a restart",
    )
    assert conn.lookupByName(name).ID() != first
    assert conn.lookupByName(name).vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE) == 1
    restart = condition(obj, "RestartRequired")
    assert restart is not None and restart["status"] == "False"


@pytest.mark.disruptive
def test_libvirtd_restart_is_survived_and_healing_goes_on(
    controller: Controller, prefix: str, stack: dict[str, str]
) -> None:
    name = f"{prefix}-lvd"
    write_domain(controller, "lvd.yaml", name, {})
    controller.start(resync=300)

    def connect() -> Any:
        return libvirt.open(stack["LIBVIRT_DEFAULT_URI"])

    wait_for(lambda: state_of(connect(), name) == "running", 30, "running")
    if not (REPO / ".stack" / "pids" / "libvirtd.pid").exists():
        pytest.fail("this test restarts the libvirtd that scripts/real-stack.sh started")
    # libvirtd itself (tini, its supervisor, exits with it and real-stack.sh starts both).
    subprocess.run(["kill", "-9", Path("/run/libvirtd.pid").read_text().strip()], check=True)
    try:

        def unknown() -> bool:
            obj = controller.object(name)
            ready = condition(obj, "Ready") if obj else None
            return ready is not None and ready["status"] == "Unknown"

        wait_for(unknown, 20, "Ready=Unknown while libvirtd is down")
        ready = condition(controller.object(name) or {"conditions": []}, "Ready")
        assert ready is not None and ready["reason"] == "LibvirtUnavailable"
        assert controller.running
    finally:
        subprocess.run(
            ["bash", str(REPO / "scripts" / "real-stack.sh"), "up"], check=True, capture_output=True
        )

    conn = connect()
    wait_for(lambda: state_of(conn, name) == "running", 30, "guest survived the restart")
    wait_for(lambda: (o := controller.object(name)) and o["ready"], 30, "Ready again")
    first = conn.lookupByName(name).ID()
    conn.lookupByName(name).destroy()  # a hand-made change after the reconnect
    wait_for(
        lambda: state_of(conn, name) == "running" and conn.lookupByName(name).ID() != first,
        15,
        "healed after libvirtd came back (events registered again)",
    )
    remove_domains(conn, prefix)


def test_import_then_plan_shows_only_the_adoption_and_run_adopts(
    controller: Controller, conn: Any, prefix: str, network: str
) -> None:
    name = f"{prefix}-old"
    conn.defineXML(
        f"<domain type='{controller.stack['KVMREC_DOMAIN_TYPE']}'><name>{name}</name>"
        "<memory unit='MiB'>48</memory><vcpu>2</vcpu><os><type arch='x86_64'>hvm</type></os>"
        f"<devices><interface type='network'><source network='{network}'/>"
        "<model type='e1000'/></interface><memballoon model='none'/></devices></domain>"
    ).create()
    first = conn.lookupByName(name).ID()
    done = subprocess.run(
        controller.command("import", name),
        capture_output=True,
        text=True,
        env=controller.env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (controller.manifests / "old.yaml").write_text(done.stdout)

    code, body = plan(controller)
    assert code == 2, body
    assert [(c["name"], c["action"]) for c in body["changes"]] == [(name, "adopt")], body
    assert run_once(controller).returncode == 0
    assert plan(controller) == (0, {"changes": [], "errors": []})
    stamp = ET.fromstring(conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).find(
        f"metadata/{{{OWNER_NS}}}owner"
    )
    assert stamp is not None, "adopted"
    assert conn.lookupByName(name).ID() == first, "adopting did not restart the guest"


_disks = st.lists(
    st.one_of(
        st.builds(
            Disk,
            path=st.sampled_from(["/var/lib/kt/a.qcow2", "/var/lib/kt/b.img", "/srv/kt/c.qcow2"]),
            format=st.sampled_from(["qcow2", "raw"]),
            bus=st.sampled_from(["virtio", "sata", "scsi"]),
            read_only=st.just(False),
        ),
        # libvirt refuses read-only sata and ide disks; the schema says so too.
        st.builds(
            Disk,
            path=st.just("/var/lib/kt/e.img"),
            format=st.just("raw"),
            bus=st.sampled_from(["virtio", "scsi"]),
            read_only=st.just(True),
        ),
        st.builds(
            Disk,
            path=st.just("/var/lib/kt/d.iso"),
            format=st.just("raw"),
            bus=st.sampled_from(["sata", "ide"]),
            device=st.just("cdrom"),
            read_only=st.just(True),
        ),
    ),
    max_size=3,
    unique_by=lambda d: d.path,
)


@st.composite
def domain_specs(draw: st.DrawFn) -> DomainSpec:
    vcpus = draw(st.integers(1, 4))
    memory = draw(st.integers(16, 256)) * MiB
    ifaces = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["lan", "wan", "mgmt"]),
                st.sampled_from(["virtio", "e1000", "rtl8139"]),
                st.booleans(),
            ),
            max_size=2,
            unique_by=lambda t: t[0],
        )
    )
    return DomainSpec(
        memory=memory,
        type=draw(st.sampled_from(["kvm", "qemu"])),
        vcpus=vcpus,
        max_vcpus=draw(st.one_of(st.none(), st.integers(vcpus, 8))),
        max_memory=draw(
            st.one_of(st.none(), st.integers(memory // MiB, 512).map(lambda m: m * MiB))
        ),
        console=draw(st.sampled_from(["serial", "none"])),
        graphics=draw(
            st.sampled_from([Graphics(), Graphics("vnc", "127.0.0.1"), Graphics("vnc", "0.0.0.0")])
        ),
        guest_agent=draw(st.booleans()),
        boot=tuple(
            draw(
                st.lists(
                    st.sampled_from(["hd", "cdrom", "network"]), min_size=1, max_size=3, unique=True
                )
            )
        ),
        disks=tuple(draw(_disks)),
        interfaces=tuple(
            Interface(
                name=n,
                mac=derived_mac("kt-prop", n),
                model=m,
                **(
                    {"network": "kt-prop-net"}
                    if net
                    else {"bridge": "kt-prop-br", "virtualport": "openvswitch"}
                ),
            )
            for n, m, net in ifaces
        ),
    )


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(spec=domain_specs())
def test_model_to_xml_to_libvirtd_to_model_is_the_identity(
    stack: dict[str, str], spec: DomainSpec
) -> None:
    conn = libvirt.open(stack["LIBVIRT_DEFAULT_URI"])
    name = "kt-prop-" + str(time.monotonic_ns())[-8:]
    owner = domain_xml.Owner("Domain", name, "uid", 1, "digest")
    try:
        dom = conn.defineXML(domain_xml.build(name, spec, owner))
        parsed = domain_xml.parse(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        assert diff_config(spec, parsed) == []
        assert parsed.owner == owner
        dom.undefine()
    finally:
        remove_domains(conn, name)
        conn.close()
