"""Snapshots and snapshot policies on real guests with 16 MiB qcow2 disks."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from realstack import Controller, condition, plan_text, run_once, state_of, wait_for

pytestmark = pytest.mark.integration


def doc(kind: str, name: str, spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kvmrec.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, **meta},
        "spec": spec,
    }


def write(ctl: Controller, filename: str, *docs: dict[str, Any]) -> None:
    ctl.write(filename, "\n---\n".join(json.dumps(d) for d in docs))


def domain(ctl: Controller, name: str, disk: Path, **spec: Any) -> dict[str, Any]:
    return doc(
        "Domain",
        name,
        {
            "type": ctl.stack["KVMREC_DOMAIN_TYPE"],
            "memory": "64Mi",
            "disks": [{"path": str(disk), "size": "16Mi"}],
            **spec,
        },
        labels={"backup": "yes"},
    )


def snapshot_names(conn: Any, name: str) -> list[str]:
    if state_of(conn, name) is None:
        return []
    return sorted(s.getName() for s in conn.lookupByName(name).listAllSnapshots(0))


def qemu_io(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-io", *args], capture_output=True, text=True, check=False)


def test_a_policy_every_2s_keeps_the_last_2_and_never_a_hand_made_one(
    controller: Controller, conn: Any, prefix: str, tmp_path: Path
) -> None:
    name, policy = f"{prefix}-pol", f"{prefix}-p"
    write(controller, "dom.yaml", domain(controller, name, tmp_path / "pol.qcow2"))
    controller.start()
    wait_for(lambda: state_of(conn, name) == "running", 30, "guest running")
    conn.lookupByName(name).snapshotCreateXML(
        "<domainsnapshot><name>by-hand</name></domainsnapshot>", 0
    )

    write(
        controller,
        "policy.yaml",
        doc(
            "SnapshotPolicy",
            policy,
            {
                "selector": {"matchLabels": {"backup": "yes"}},
                "every": "2s",
                "retention": {"keepLast": 2},
                "quiesce": "auto",
            },
        ),
    )
    wait_for(
        lambda: len([n for n in snapshot_names(conn, name) if policy in n]) >= 2,
        20,
        "two policy snapshots",
    )
    time.sleep(5)  # at least two more rounds of snapshot and prune

    def policy_snapshots() -> list[str]:
        return [n for n in snapshot_names(conn, name) if n.startswith(f"kvmrec-{policy}-")]

    # Sampled between a round's snapshot and its prune there are three for an instant.
    wait_for(lambda: len(policy_snapshots()) == 2, 5, "two policy snapshots after the prune")
    names = snapshot_names(conn, name)
    assert "by-hand" in names, "a hand-made snapshot is never pruned"

    obj = controller.object(policy, "SnapshotPolicy")
    assert obj is not None and obj["ready"]

    # The listing is another sample: a round may be between its snapshot and its prune.
    def listed_two() -> str | None:
        listed = controller.cli("snapshot", "list", name)
        assert listed.returncode == 0 and "(not kvmrec's)" in listed.stdout
        return listed.stdout if listed.stdout.count(f"kvmrec-{policy}-") == 2 else None

    wait_for(listed_two, 5, "kvmrec snapshot list showing the two it keeps")


def test_revert_brings_back_the_disk_as_it_was(
    controller: Controller, conn: Any, prefix: str, tmp_path: Path
) -> None:
    name, disk = f"{prefix}-rev", tmp_path / "rev.qcow2"
    write(controller, "dom.yaml", domain(controller, name, disk, runStrategy="Halted"))
    done = run_once(controller)
    assert done.returncode == 0, done.stdout + done.stderr

    assert qemu_io("-f", "qcow2", "-c", "write -P 0xaa 0 64k", str(disk)).returncode == 0
    taken = controller.cli("snapshot", "create", name, "before")
    assert taken.returncode == 0, taken.stderr
    assert qemu_io("-f", "qcow2", "-c", "write -P 0xbb 0 64k", str(disk)).returncode == 0
    assert (
        "Pattern verification failed"
        in qemu_io("-f", "qcow2", "-c", "read -P 0xaa 0 64k", str(disk)).stdout
    )

    reverted = controller.cli("snapshot", "revert", name, "before")
    assert reverted.returncode == 0, reverted.stderr
    read = qemu_io("-f", "qcow2", "-c", "read -P 0xaa 0 64k", str(disk))
    assert read.returncode == 0 and "Pattern verification failed" not in read.stdout
    assert state_of(conn, name) == "shutoff"


def test_quiesce_required_without_an_agent_fails_with_a_clear_condition(
    controller: Controller, conn: Any, prefix: str, tmp_path: Path
) -> None:
    name, policy = f"{prefix}-qr", f"{prefix}-q"
    write(
        controller,
        "all.yaml",
        domain(controller, name, tmp_path / "qr.qcow2"),
        doc(
            "SnapshotPolicy",
            policy,
            {"domains": [name], "every": "1h", "retention": {"keepLast": 3}, "quiesce": "required"},
        ),
    )
    controller.start()
    obj = wait_for(
        lambda: (
            (o := controller.object(policy, "SnapshotPolicy"))
            and (c := condition(o, "Ready"))
            and c["reason"] == "QuiesceFailed"
            and o
        ),
        30,
        "QuiesceFailed",
    )
    message = condition(obj, "Ready")["message"]  # type: ignore[index]
    assert "guest agent" in message and name in message
    assert snapshot_names(conn, name) == [], "nothing taken unquiesced"


def test_memory_false_on_a_running_guest_is_refused_with_a_reason(
    controller: Controller, conn: Any, prefix: str, tmp_path: Path
) -> None:
    name, snap = f"{prefix}-mem", f"{prefix}-s"
    write(
        controller,
        "all.yaml",
        domain(controller, name, tmp_path / "mem.qcow2"),
        doc("Snapshot", snap, {"domain": name, "memory": False}),
    )
    controller.start()
    obj = wait_for(
        lambda: (
            (o := controller.object(snap, "Snapshot"))
            and (c := condition(o, "Ready"))
            and c["reason"] == "MemoryStateRequired"
            and o
        ),
        30,
        "MemoryStateRequired",
    )
    assert "memory" in condition(obj, "Ready")["message"]  # type: ignore[index]


def test_a_snapshot_object_lives_as_long_as_its_manifest(
    controller: Controller, conn: Any, prefix: str, tmp_path: Path
) -> None:
    name, snap, kept = f"{prefix}-so", f"{prefix}-one", f"{prefix}-kept"
    write(controller, "dom.yaml", domain(controller, name, tmp_path / "so.qcow2"))
    write(controller, "snap.yaml", doc("Snapshot", snap, {"domain": name}))
    write(
        controller, "kept.yaml", doc("Snapshot", kept, {"domain": name, "deletionPolicy": "Retain"})
    )
    controller.start()
    wait_for(lambda: snapshot_names(conn, name) == sorted([snap, kept]), 30, "both taken")
    obj = wait_for(
        lambda: (o := controller.object(snap, "Snapshot")) and o["ready"] and o, 10, "ready"
    )
    assert obj["conditions"]
    controller.remove("snap.yaml")
    wait_for(lambda: snapshot_names(conn, name) == [kept], 15, "deleted with its manifest")
    controller.remove("kept.yaml")
    time.sleep(2)
    assert snapshot_names(conn, name) == [kept], "Retain keeps it"


def test_a_domain_with_snapshots_is_deleted(
    controller: Controller, conn: Any, prefix: str, tmp_path: Path
) -> None:
    name, disk = f"{prefix}-del", tmp_path / "del.qcow2"
    write(controller, "dom.yaml", domain(controller, name, disk))
    write(
        controller,
        "other.yaml",
        doc(
            "Domain",
            f"{prefix}-stay",
            {"type": controller.stack["KVMREC_DOMAIN_TYPE"], "memory": "64Mi"},
        ),
    )
    controller.start()
    wait_for(lambda: state_of(conn, name) == "running", 30, "running")
    conn.lookupByName(name).snapshotCreateXML("<domainsnapshot><name>s1</name></domainsnapshot>", 0)
    controller.remove("dom.yaml")
    wait_for(lambda: state_of(conn, name) is None, 20, "undefined with its snapshot metadata")
    assert disk.exists()


def test_plan_shows_a_due_snapshot(
    controller: Controller, conn: Any, prefix: str, tmp_path: Path
) -> None:
    name, policy = f"{prefix}-pl", f"{prefix}-pp"
    write(controller, "dom.yaml", domain(controller, name, tmp_path / "pl.qcow2"))
    done = run_once(controller)
    assert done.returncode == 0, done.stdout + done.stderr
    write(
        controller,
        "policy.yaml",
        doc(
            "SnapshotPolicy",
            policy,
            {"domains": [name], "every": "1h", "retention": {"keepLast": 1}},
        ),
    )
    planned = plan_text(controller, "-o", "json")
    assert planned.returncode == 2
    changes = json.loads(planned.stdout)["changes"]
    assert [(c["kind"], c["action"]) for c in changes] == [("SnapshotPolicy", "snapshot")]
    assert snapshot_names(conn, name) == [], "plan changes nothing"
