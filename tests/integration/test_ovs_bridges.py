"""OvsBridge objects on the real ovsdb-server/ovs-vswitchd, with libvirt networks and
guests on them: the whole path a production host uses, declared and kept in order."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from realstack import REPO, Controller, condition, ovs_ports, state_of, wait_for

pytestmark = pytest.mark.integration


def write(ctl: Controller, filename: str, docs: list[tuple[str, str, dict[str, Any]]]) -> None:
    text = "\n---\n".join(
        json.dumps(
            {
                "apiVersion": "kvmrec.io/v1alpha1",
                "kind": kind,
                "metadata": {"name": name},
                "spec": (
                    {"type": ctl.stack["KVMREC_DOMAIN_TYPE"], "memory": "64Mi", **spec}
                    if kind == "Domain"
                    else spec
                ),
            }
        )
        for kind, name, spec in docs
    )
    ctl.write(filename, text)


def vsctl(*args: str, check: bool = True) -> str:
    done = subprocess.run(
        ["ovs-vsctl", "--timeout=10", *args], capture_output=True, text=True, check=check
    )
    return done.stdout.strip()


def bridge_exists(name: str) -> bool:
    return (
        subprocess.run(["ovs-vsctl", "--timeout=10", "br-exists", name], check=False).returncode
        == 0
    )


@pytest.fixture
def names(prefix: str) -> dict[str, str]:
    short = prefix[3:7]  # bridge and port names are at most 15 characters
    return {
        "bridge": f"kb{short}",
        "uplink": f"kb{short}up",
        "extra": f"kb{short}x",
        "net": f"{prefix}-on",
        "dom": f"{prefix}-og",
    }


@pytest.fixture
def cleanup(controller: Controller, names: dict[str, str], stack: dict[str, str]) -> Iterator[None]:
    yield
    controller.stop()
    conn = libvirt.open(stack["LIBVIRT_DEFAULT_URI"])
    for dom in conn.listAllDomains(0):
        if dom.name() == names["dom"]:
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    for net in conn.listAllNetworks(0):
        if net.name() == names["net"]:
            if net.isActive():
                net.destroy()
            net.undefine()
    conn.close()
    subprocess.run(
        ["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", names["bridge"]],
        check=False,
        capture_output=True,
    )


def full_path(n: dict[str, str], *, bridge_spec: dict[str, Any] | None = None) -> list[Any]:
    """Listed the wrong way round on purpose: the domain first, the bridge last."""
    return [
        ("Domain", n["dom"], {"interfaces": [{"name": "lan", "network": n["net"]}]}),
        (
            "Network",
            n["net"],
            {"forward": "bridge", "bridge": n["bridge"], "virtualport": "openvswitch"},
        ),
        (
            "OvsBridge",
            n["bridge"],
            bridge_spec
            or {
                "ports": [{"name": n["uplink"], "type": "internal"}],
                "failMode": "standalone",
                "externalIds": {"role": "guests"},
            },
        ),
    ]


def test_bridge_uplink_network_and_guest_converge_in_any_order(
    controller: Controller, conn: Any, names: dict[str, str], cleanup: None
) -> None:
    n = names
    write(controller, "all.yaml", full_path(n))
    controller.start()
    wait_for(lambda: state_of(conn, n["dom"]) == "running", 40, "guest running")
    assert vsctl("get", "Bridge", n["bridge"], "datapath_type") == controller.stack.get(
        "KVMREC_OVS_DATAPATH", "netdev"
    )
    assert vsctl("get", "Bridge", n["bridge"], "fail_mode") == "standalone"
    assert vsctl("get", "Bridge", n["bridge"], "external_ids:role") == "guests"
    ports = wait_for(
        lambda: [p for p in ovs_ports(n["bridge"]) if p.startswith("vnet")], 10, "the guest's port"
    )
    vm_id = vsctl("get", "Interface", ports[0], "external_ids:vm-id").strip('"')
    assert vm_id == conn.lookupByName(n["dom"]).UUIDString()
    assert n["uplink"] in ovs_ports(n["bridge"])

    _, body = wait_for(lambda: (r := controller.status()) and r[0] == 0 and r, 20, "clean")
    assert body["errors"] == []
    assert all(o["lastError"] is None and o["drift"] == [] for o in body["objects"])
    bridge = next(o for o in body["objects"] if o["kind"] == "OvsBridge")
    assert bridge["ready"] and bridge["synced"], "the guest's vnet port is not drift"


def test_hand_changes_to_the_bridge_are_healed_and_guest_ports_kept(
    controller: Controller, conn: Any, names: dict[str, str], cleanup: None
) -> None:
    n = names
    write(controller, "all.yaml", full_path(n))
    controller.start(resync=300)
    wait_for(lambda: state_of(conn, n["dom"]) == "running", 40, "guest running")
    guest_port = wait_for(
        lambda: [p for p in ovs_ports(n["bridge"]) if p.startswith("vnet")], 10, "guest port"
    )[0]

    vsctl(
        "add-port", n["bridge"], n["extra"], "--", "set", "Interface", n["extra"], "type=internal"
    )
    vsctl("set", "Bridge", n["bridge"], "external_ids:role=tampered")
    wait_for(
        lambda: (
            n["extra"] not in ovs_ports(n["bridge"])
            and vsctl("get", "Bridge", n["bridge"], "external_ids:role") == "guests"
        ),
        10,
        "extra port removed and external id restored",
    )
    assert guest_port in ovs_ports(n["bridge"]), "libvirt's port is never touched"

    vsctl("del-br", n["bridge"])
    wait_for(
        lambda: bridge_exists(n["bridge"]) and n["uplink"] in ovs_ports(n["bridge"]),
        10,
        "bridge restored by hand deletion (OVSDB event, no resync)",
    )


@pytest.mark.disruptive
def test_ovs_restarted_with_a_new_database_under_a_running_kvmrec(
    controller: Controller, names: dict[str, str], cleanup: None
) -> None:
    n = names
    write(controller, "br.yaml", [full_path(n)[2]])
    controller.start(resync=300)
    wait_for(lambda: bridge_exists(n["bridge"]), 20, "bridge created")

    pid_file = REPO / ".stack" / "pids" / "ovsdb-server.pid"
    db = REPO / ".stack" / "ovs" / "conf.db"
    if not pid_file.exists() or not db.exists():
        pytest.fail("this test restarts the ovsdb-server that scripts/real-stack.sh started")
    saved = db.with_name("conf.db.kt-saved")

    def restart_ovsdb(swap: Callable[[], None]) -> None:
        try:
            subprocess.run(["kill", pid_file.read_text().strip()], check=True)
            deadline = time.monotonic() + 10
            while Path("/run/openvswitch/db.sock").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            swap()
        finally:
            subprocess.run(
                ["bash", str(REPO / "scripts" / "real-stack.sh"), "up"],
                check=True,
                capture_output=True,
            )

    # A new, empty database (every bridge gone), as after `ovsdb-tool create` by hand. The
    # host's own database is put back afterwards, so the bridges of others survive the test.
    restart_ovsdb(lambda: db.replace(saved))
    try:
        wait_for(
            lambda: bridge_exists(n["bridge"]) and n["uplink"] in ovs_ports(n["bridge"]),
            20,
            "re-converged after the OVS restart, without waiting for a resync",
        )
        assert controller.running
    finally:
        restart_ovsdb(lambda: saved.replace(db))


def test_a_bridge_in_use_is_not_deleted(
    controller: Controller, conn: Any, names: dict[str, str], cleanup: None
) -> None:
    n = names
    docs = full_path(n)
    write(controller, "net.yaml", docs[1:2])
    write(controller, "br.yaml", docs[2:3])
    write(controller, "keep.yaml", docs[0:1])
    controller.start()
    wait_for(lambda: state_of(conn, n["dom"]) == "running", 40, "guest running")

    controller.remove("br.yaml")
    obj = wait_for(
        lambda: (
            (o := controller.object(n["bridge"], "OvsBridge"))
            and o["deleting"]
            and (c := condition(o, "Synced"))
            and c["reason"] == "InUse"
            and o
        ),
        15,
        "deletion held",
    )
    assert f"Network/{n['net']}" in condition(obj, "Synced")["message"]  # type: ignore[index]
    assert bridge_exists(n["bridge"])


def test_a_system_datapath_on_a_kernel_without_one_is_refused_with_a_reason(
    controller: Controller, names: dict[str, str], cleanup: None
) -> None:
    if Path("/sys/module/openvswitch").exists():
        pytest.skip("this kernel has the openvswitch module: system bridges work here")
    write(controller, "br.yaml", [("OvsBridge", names["bridge"], {"datapathType": "system"})])
    controller.start()
    obj = wait_for(
        lambda: (o := controller.object(names["bridge"], "OvsBridge")) and o["conditions"] and o,
        15,
        "status",
    )
    ready = condition(obj, "Ready")
    assert ready is not None and ready["reason"] == "DatapathUnavailable"
    assert "netdev" in ready["message"]
    assert not bridge_exists(names["bridge"])
