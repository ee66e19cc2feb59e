"""The foundation, end to end on qemu:///system with real KVM guests.

An operator drops a manifest, and kvmrec defines and starts the guest, heals it when it is
destroyed by hand, applies edits, reports broken files while the rest converges, removes
guests whose manifests go, and survives kill -9 in the middle of a converge.
"""

from __future__ import annotations

import contextlib
import random
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import libvirt
import pytest
from realstack import Controller, domain_manifest, run_once, state_of, wait_for

pytestmark = pytest.mark.integration

OWNER_NS = "https://kvmrec.io/xmlns/owner/v1alpha1"


def manifest(stack: dict[str, str], name: str, **spec: Any) -> str:
    return domain_manifest(name, stack["KVMREC_DOMAIN_TYPE"], **spec)


def owner(conn: Any, name: str) -> ET.Element | None:
    xml = conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    return ET.fromstring(xml).find(f"metadata/{{{OWNER_NS}}}owner")


def test_dropped_manifest_runs_within_seconds_and_is_reported(
    controller: Controller, conn: Any, prefix: str, stack: dict[str, str]
) -> None:
    name = f"{prefix}-web"
    controller.start()
    dropped = time.monotonic()
    controller.write("web.yaml", manifest(stack, name, vcpus=1))
    wait_for(lambda: state_of(conn, name) == "running", 20, f"{name} running")
    took = time.monotonic() - dropped

    stamp = owner(conn, name)
    assert stamp is not None and stamp.get("name") == name and stamp.get("generation") == "1"
    obj = wait_for(
        lambda: (o := controller.object(name)) and o["ready"] and o["synced"] and o,
        10,
        "status ready and synced",
    )
    assert obj["observedGeneration"] == obj["generation"] == 1
    assert obj["source"] == "web.yaml"
    assert {c["type"]: c["status"] for c in obj["conditions"]} == {
        "Ready": "True",
        "Synced": "True",
    }
    assert obj["drift"] == []
    code, body = controller.status()
    assert code == 0, body
    assert took < 10, f"took {took:.1f}s from drop to running"


def test_destroy_by_hand_is_healed(
    controller: Controller, conn: Any, prefix: str, stack: dict[str, str]
) -> None:
    name = f"{prefix}-heal"
    controller.write("heal.yaml", manifest(stack, name))
    controller.start(resync=300)  # healing must come from libvirt events, not the resync
    # Ready in kvmrec's status: the start is over (libvirt says running while it is not).
    wait_for(
        lambda: state_of(conn, name) == "running" and (controller.object(name) or {}).get("ready"),
        20,
        "first start",
    )
    first_id = conn.lookupByName(name).ID()

    conn.lookupByName(name).destroy()
    wait_for(lambda: state_of(conn, name) == "running", 10, "healed after virsh destroy")
    assert conn.lookupByName(name).ID() != first_id, "a new QEMU process runs the guest"
    assert controller.running


def test_autostart_edit_is_applied_and_generation_advances(
    controller: Controller, conn: Any, prefix: str, stack: dict[str, str]
) -> None:
    name = f"{prefix}-auto"
    controller.write("auto.yaml", manifest(stack, name, autostart=False))
    controller.start()
    wait_for(lambda: (o := controller.object(name)) and o["ready"], 20, "ready")
    assert conn.lookupByName(name).autostart() == 0

    controller.write("auto.yaml", manifest(stack, name, autostart=True))
    wait_for(lambda: conn.lookupByName(name).autostart() == 1, 10, "autostart applied")
    obj = wait_for(
        lambda: (o := controller.object(name)) and o["observedGeneration"] == 2 and o,
        10,
        "generation 2 observed",
    )
    assert obj["synced"] and obj["drift"] == []


def test_autostart_flipped_by_hand_is_healed_at_resync_and_shown_as_drift(
    controller: Controller, conn: Any, prefix: str, stack: dict[str, str]
) -> None:
    name = f"{prefix}-flip"
    controller.write("flip.yaml", manifest(stack, name, autostart=True))
    controller.start(resync=2)
    wait_for(lambda: (o := controller.object(name)) and o["ready"] and o["synced"], 20, "ready")

    conn.lookupByName(name).setAutostart(0)  # libvirt raises no event for this
    wait_for(lambda: conn.lookupByName(name).autostart() == 1, 10, "autostart healed")
    _, body = controller.status()
    assert body["objects"][0]["drift"] == []


def test_broken_manifest_is_reported_while_the_others_converge(
    controller: Controller, conn: Any, prefix: str, stack: dict[str, str]
) -> None:
    good, kept = f"{prefix}-good", f"{prefix}-kept"
    controller.write("kept.yaml", manifest(stack, kept, vcpus=1))
    controller.start()
    wait_for(lambda: state_of(conn, kept) == "running", 20, "kept running")

    # kept.yaml breaks: its last good state must stay in force.
    controller.write("kept.yaml", manifest(stack, kept, vcpus="two"))
    controller.write("broken.yaml", "apiVersion: kvmrec.io/v1alpha1\nkind: Domain\nspec: [\n")
    controller.write("good.yaml", manifest(stack, good))
    wait_for(lambda: state_of(conn, good) == "running", 20, "good running")

    def errors() -> dict[str, str]:
        return {e["source"]: e["message"] for e in controller.status()[1].get("errors", [])}

    found = wait_for(lambda: len(errors()) == 2 and errors(), 10, "both errors reported")
    assert "line" in found["broken.yaml"] and "YAML" in found["broken.yaml"]
    assert "spec.vcpus" in found["kept.yaml"] and "line 7" in found["kept.yaml"]
    code, body = controller.status()
    assert code == 2
    assert {o["name"] for o in body["objects"]} == {good, kept}
    assert state_of(conn, kept) == "running", "a broken file is never read as a deletion"
    assert controller.running

    controller.write("kept.yaml", manifest(stack, kept, vcpus=1))
    controller.remove("broken.yaml")
    wait_for(lambda: controller.status()[0] == 0, 15, "status clean again")


def test_removed_manifest_removes_the_guest_but_not_its_disk(
    controller: Controller, conn: Any, prefix: str, stack: dict[str, str], tmp_path: Path
) -> None:
    name = f"{prefix}-gone"
    disk = tmp_path / "gone.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    controller.write("gone.yaml", manifest(stack, name, disks=[{"path": str(disk)}]))
    controller.start()
    wait_for(lambda: state_of(conn, name) == "running", 20, "running")
    xml = conn.lookupByName(name).XMLDesc(0)
    assert str(disk) in xml

    controller.remove("gone.yaml")
    wait_for(lambda: state_of(conn, name) is None, 15, "guest undefined")
    assert disk.exists(), "disk images are never deleted unless a manifest asks"
    wait_for(lambda: controller.object(name) is None, 10, "object gone from status")


def test_orphan_policy_leaves_the_guest_unstamped(
    controller: Controller, conn: Any, prefix: str, stack: dict[str, str]
) -> None:
    name = f"{prefix}-orphan"
    controller.write("orphan.yaml", manifest(stack, name, deletionPolicy="Orphan"))
    controller.start()
    wait_for(lambda: state_of(conn, name) == "running", 20, "running")
    assert owner(conn, name) is not None

    controller.remove("orphan.yaml")
    wait_for(lambda: owner(conn, name) is None, 15, "stamp removed")
    assert state_of(conn, name) == "running"


def test_unowned_domain_of_the_same_name_is_a_conflict_and_untouched(
    controller: Controller, conn: Any, prefix: str, stack: dict[str, str]
) -> None:
    name = f"{prefix}-theirs"
    conn.defineXML(
        f"<domain type='{stack['KVMREC_DOMAIN_TYPE']}'><name>{name}</name>"
        "<memory unit='MiB'>32</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>"
        "<devices><memballoon model='none'/></devices></domain>"
    )
    before = conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    controller.write("theirs.yaml", manifest(stack, name, vcpus=2))
    controller.start()

    obj = wait_for(lambda: (o := controller.object(name)) and o["conditions"] and o, 15, "status")
    ready = next(c for c in obj["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Conflict")
    assert "not managed by kvmrec" in ready["message"]
    assert controller.status()[0] == 2
    assert conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) == before
    assert state_of(conn, name) == "shutoff"

    controller.remove("theirs.yaml")
    wait_for(lambda: controller.object(name) is None, 10, "object forgotten")
    assert conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) == before


def test_halted_strategy_stops_and_keeps_the_guest_stopped(
    controller: Controller, conn: Any, prefix: str, stack: dict[str, str]
) -> None:
    name = f"{prefix}-halt"
    controller.write("halt.yaml", manifest(stack, name))
    controller.start()
    wait_for(lambda: state_of(conn, name) == "running", 20, "running")
    controller.write("halt.yaml", manifest(stack, name, runStrategy="Halted"))
    wait_for(lambda: state_of(conn, name) == "shutoff", 15, "stopped")
    # Started by hand: Halted means kvmrec stops it again, possibly before the start even
    # returns, which then fails.
    with contextlib.suppress(libvirt.libvirtError):
        conn.lookupByName(name).create()
    wait_for(lambda: state_of(conn, name) == "shutoff", 15, "stopped again")
    obj = wait_for(lambda: (o := controller.object(name)) and o["ready"] and o, 10, "ready")
    assert obj["state"] == "shutoff"


def test_emptying_the_directory_is_refused(
    controller: Controller, conn: Any, prefix: str, stack: dict[str, str]
) -> None:
    names = [f"{prefix}-m{i}" for i in range(3)]
    for name in names:
        controller.write(f"{name}.yaml", manifest(stack, name))
    controller.start()
    for name in names:
        wait_for(lambda n=name: state_of(conn, n) == "running", 30, f"{name} running")

    for name in names:
        controller.remove(f"{name}.yaml")
    errors = wait_for(lambda: controller.status()[1].get("errors"), 10, "guard reported")
    assert "refusing to delete 3 of 3" in errors[0]["message"]
    time.sleep(1.0)
    assert all(state_of(conn, n) == "running" for n in names)


def test_vcpu_change_on_a_running_guest_requires_a_restart(
    controller: Controller, conn: Any, prefix: str, stack: dict[str, str]
) -> None:
    name = f"{prefix}-cpu"
    controller.write("cpu.yaml", manifest(stack, name, vcpus=1))
    controller.start()
    wait_for(lambda: (o := controller.object(name)) and o["ready"] and o["synced"], 20, "ready")
    controller.write("cpu.yaml", manifest(stack, name, vcpus=2))
    obj = wait_for(
        lambda: (o := controller.object(name)) and o["observedGeneration"] == 2 and o, 10, "gen 2"
    )
    restart = next(c for c in obj["conditions"] if c["type"] == "RestartRequired")
    assert restart["status"] == "True" and "spec.vcpus" in restart["message"]
    # Beyond maxVcpus (it follows vcpus when not set), so the running guest cannot take it.
    assert obj["drift"] == [
        {"field": "spec.vcpus", "desired": 2, "actual": 1},
        {"field": "spec.maxVcpus", "desired": 2, "actual": 1},
    ]
    inactive = conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert ET.fromstring(inactive).findtext("vcpu") == "2", "the definition is updated"

    conn.lookupByName(name).destroy()  # the restart picks the new definition up
    wait_for(
        lambda: (o := controller.object(name)) and o["synced"] and not o["drift"],
        15,
        "synced after the restart",
    )
    assert conn.lookupByName(name).info()[3] == 2


def test_run_once_converges_and_exits_with_the_status_code(
    controller: Controller, conn: Any, prefix: str, stack: dict[str, str]
) -> None:
    names = [f"{prefix}-once{i}" for i in range(3)]
    for name in names:
        controller.write(f"{name}.yaml", manifest(stack, name))
    done = run_once(controller)
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(state_of(conn, n) == "running" for n in names)
    assert all(n in done.stdout for n in names)

    controller.write("bad.yaml", "not: [valid")
    done = run_once(controller, timeout=30)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "bad.yaml" in done.stdout


def test_sigterm_exits_promptly(
    controller: Controller, conn: Any, prefix: str, stack: dict[str, str]
) -> None:
    names = [f"{prefix}-t{i}" for i in range(4)]
    for name in names:
        controller.write(f"{name}.yaml", manifest(stack, name))
    controller.start()
    # Mid-converge: once the manifests are read and the first guest is being made (a
    # SIGTERM before Python has even imported kvmrec would only test the interpreter).
    wait_for(lambda: "Created" in controller.log_text(), 20, "converging")
    took = controller.stop()
    assert took < 10, f"took {took:.1f}s to stop"
    assert controller.proc is not None and controller.proc.returncode == 0


def test_kill_9_mid_converge_then_restart_ends_with_exactly_the_guests(
    controller: Controller, conn: Any, prefix: str, stack: dict[str, str]
) -> None:
    names = {f"{prefix}-k{i}" for i in range(10)}
    for name in sorted(names):
        controller.write(f"{name}.yaml", manifest(stack, name))
    rng = random.Random(7)
    for _ in range(3):
        controller.start()
        time.sleep(rng.uniform(0.2, 1.2))
        controller.kill9()

    controller.start()
    wait_for(lambda: all(state_of(conn, n) == "running" for n in names), 60, "all 10 running")
    wait_for(lambda: controller.status()[0] == 0, 20, "status clean")
    ours = {d.name() for d in conn.listAllDomains(0) if d.name().startswith(prefix)}
    assert ours == names, "nothing duplicated, nothing orphaned"
    uuids = {conn.lookupByName(n).UUIDString() for n in names}
    assert len(uuids) == 10
    _, body = controller.status()
    assert sorted(o["name"] for o in body["objects"]) == sorted(names)
    assert all(o["generation"] == 1 for o in body["objects"]), "no spurious generations"
