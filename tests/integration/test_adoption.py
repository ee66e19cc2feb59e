"""Adopting what kvmrec did not create, on qemu:///system and the real Open vSwitch: the
manifest ``kvmrec import`` prints gives the guest back when it is removed, and ``kvmrec
plan`` shows every adoption (and a deletion of an adopted object) before it happens."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from typing import Any

import libvirt
import pytest
import yaml
from realstack import Controller, plan, plan_text, run_once, state_of, wait_for

pytestmark = pytest.mark.integration

OWNER = "metadata/{https://kvmrec.io/xmlns/owner/v1alpha1}owner"
ADOPT = {"kvmrec.io/adopt": "true"}


def define_outside(
    ctl: Controller, conn: Any, name: str, vcpus: int = 1, start: bool = True
) -> Any:
    """A guest made by hand, as an operator's existing guests are."""
    dom = conn.defineXML(
        f"<domain type='{ctl.stack['KVMREC_DOMAIN_TYPE']}'><name>{name}</name>"
        f"<memory unit='MiB'>48</memory><vcpu>{vcpus}</vcpu>"
        "<os><type arch='x86_64'>hvm</type></os>"
        "<devices><memballoon model='none'/></devices></domain>"
    )
    if start:
        dom.create()
    return dom


def stamp(conn: Any, name: str) -> ET.Element | None:
    xml = conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    return ET.fromstring(xml).find(OWNER)


def write(ctl: Controller, filename: str, kind: str, name: str, spec: dict[str, Any]) -> None:
    document = {
        "apiVersion": "kvmrec.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "annotations": ADOPT},
        "spec": spec,
    }
    ctl.write(filename, json.dumps(document))


def actions(body: dict[str, Any], name: str) -> list[str]:
    return [c["action"] for c in body["changes"] if c["name"] == name]


def test_an_imported_guest_is_orphaned_not_destroyed_when_its_manifest_goes(
    controller: Controller, conn: Any, prefix: str
) -> None:
    name = f"{prefix}-imp"
    define_outside(controller, conn, name)
    first = conn.lookupByName(name).ID()
    done = subprocess.run(
        controller.command("import", name),
        capture_output=True,
        text=True,
        env=controller.env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    manifest = yaml.safe_load(done.stdout)
    assert manifest["spec"]["deletionPolicy"] == "Orphan", done.stdout
    assert "# " in done.stdout and "Delete would destroy and undefine" in done.stdout

    # What import prints is a valid manifest as it stands, comment and all.
    draft = controller.root / "draft.yaml"
    draft.write_text(done.stdout)
    checked = subprocess.run(
        controller.command("validate", str(draft)),
        capture_output=True,
        text=True,
        env=controller.env(),
        check=False,
    )
    assert checked.returncode == 0, checked.stdout

    controller.write("imp.yaml", done.stdout)
    controller.start()
    wait_for(lambda: stamp(conn, name) is not None, 20, "adopted (stamped)")
    wait_for(lambda: (o := controller.object(name)) and o["synced"], 20, "synced")
    element = stamp(conn, name)
    assert element is not None and element.get("adopted") == "true", "the adoption is kept"

    controller.remove("imp.yaml")
    wait_for(lambda: controller.object(name) is None, 20, "the object is gone from the state")
    assert state_of(conn, name) == "running", "the guest is still there, running"
    assert conn.lookupByName(name).ID() == first, "and was never restarted"
    assert stamp(conn, name) is None, "only kvmrec's stamp was removed"
    done = controller.cli("events", f"Domain/{name}", "-o", "json")
    reasons = [e["reason"] for e in json.loads(done.stdout)["events"]]
    assert "Adopted" in reasons and "Orphaned" in reasons and "Deleted" not in reasons, reasons


def test_plan_shows_adopting_a_domain_and_the_changes_it_makes(
    controller: Controller, conn: Any, prefix: str
) -> None:
    name = f"{prefix}-adp"
    uuid = define_outside(controller, conn, name, vcpus=2, start=False).UUIDString()
    spec = {"type": controller.stack["KVMREC_DOMAIN_TYPE"], "memory": "48Mi", "vcpus": 1}
    write(controller, "adp.yaml", "Domain", name, {**spec, "runStrategy": "Halted"})

    code, body = plan(controller)
    assert code == 2, body
    assert actions(body, name)[:2] == ["adopt", "update"], body
    adopt = next(c for c in body["changes"] if c["action"] == "adopt")
    assert "kvmrec did not create" in adopt["detail"]
    assert "deletionPolicy: Delete" in adopt["detail"], "it warns what removal would do"
    update = next(c for c in body["changes"] if c["action"] == "update")
    assert {"field": "spec.vcpus", "desired": 1, "actual": 2} in update["fields"]
    table = plan_text(controller)
    assert table.returncode == 2
    assert any(line.split()[1:3] == [name, "adopt"] for line in table.stdout.splitlines()[1:])
    assert stamp(conn, name) is None, "plan changed nothing"

    done = run_once(controller)
    assert done.returncode == 0, done.stderr
    element = stamp(conn, name)
    assert element is not None and element.get("adopted") == "true"
    dom = conn.lookupByName(name)
    assert ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).findtext("vcpu") == "1"
    assert dom.UUIDString() == uuid, "changed, and still the same guest"
    assert plan(controller) == (0, {"changes": [], "errors": []})

    # Removing the manifest now would destroy a guest kvmrec did not create: plan says so.
    controller.remove("adp.yaml")
    code, body = plan(controller)
    assert code == 2
    [delete] = [c for c in body["changes"] if c["name"] == name]
    assert delete["action"] == "delete"
    assert "destroy and undefine" in delete["detail"]
    assert "adopted and did not create" in delete["detail"]
    assert state_of(conn, name) == "shutoff", "plan changed nothing"


def test_plan_shows_adopting_a_network_and_the_changes_it_makes(
    controller: Controller, network: str, conn: Any, prefix: str
) -> None:
    uuid = conn.networkLookupByName(network).UUIDString()
    bridge = f"{prefix}-nc"
    spec = {"active": True, "autostart": False, "bridge": bridge}
    write(controller, "net.yaml", "Network", network, spec)
    code, body = plan(controller)
    assert (code, actions(body, network)) == (2, ["adopt", "update", "restart"]), body

    done = run_once(controller)
    assert done.returncode == 0, done.stderr
    net = conn.networkLookupByName(network)
    element = ET.fromstring(net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)).find(OWNER)
    assert element is not None and element.get("adopted") == "true"
    assert (net.bridgeName(), net.UUIDString()) == (bridge, uuid), "changed, and still itself"
    assert plan(controller) == (0, {"changes": [], "errors": []})

    controller.remove("net.yaml")
    code, body = plan(controller)
    [delete] = [c for c in body["changes"] if c["name"] == network]
    assert (code, delete["action"]) == (2, "delete")
    assert "adopted and did not create" in delete["detail"]


def test_plan_shows_adopting_an_ovs_bridge(controller: Controller, ovs_bridge: str) -> None:
    datapath = controller.stack.get("KVMREC_OVS_DATAPATH", "netdev")
    write(controller, "br.yaml", "OvsBridge", ovs_bridge, {"datapathType": datapath})
    code, body = plan(controller)
    assert (code, actions(body, ovs_bridge)) == (2, ["adopt"]), body

    assert run_once(controller).returncode == 0
    ids = subprocess.run(
        ["ovs-vsctl", "--timeout=10", "br-get-external-id", ovs_bridge, "kvmrec-adopted"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert ids.stdout.strip() == "true"
    assert plan(controller) == (0, {"changes": [], "errors": []})
