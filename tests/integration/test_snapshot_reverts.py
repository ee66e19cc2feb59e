"""Snapshots and reverts by hand while ``kvmrec run`` runs, on KVM guests with a 16 MiB
qcow2 disk: libvirt's pauses for its own jobs are left to libvirt, and a snapshot that
cannot be restored (taken after a vCPU hot-plug) is known as such before a revert."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import libvirt
import pytest
from realstack import Controller, domain_manifest, state_of, wait_for

# libvirt's own job pauses, timed against the service's 30 s allowance: in the suite's
# serial run (Makefile), where a loaded host cannot stretch a snapshot past it.
pytestmark = [pytest.mark.integration, pytest.mark.quiet]


def _write(controller: Controller, name: str, disk: Path, **spec: Any) -> None:
    controller.write(
        f"{name}.yaml",
        domain_manifest(
            name,
            controller.stack["KVMREC_DOMAIN_TYPE"],
            disks=[{"path": str(disk), "size": "16Mi"}],
            **spec,
        ),
    )


def _observed(controller: Controller, name: str, generation: int) -> dict[str, Any]:
    """Wait until the service has reconciled ``generation`` of the Domain: every reconcile
    of it before that one has been written by then (one worker per key)."""
    obj = wait_for(
        lambda: (
            (o := controller.object(name))
            and o["observedGeneration"] >= generation
            and o["ready"]
            and o
        ),
        60,
        f"generation {generation} of {name} reconciled and ready",
    )
    return dict(obj)


def _events(controller: Controller, name: str) -> list[dict[str, Any]]:
    done = controller.cli("events", f"Domain/{name}", "-o", "json")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    return list(body["events"] if isinstance(body, dict) else body)


def _reasons(controller: Controller, name: str) -> list[str]:
    return [e["reason"] for e in _events(controller, name)]


def test_snapshots_and_reverts_by_hand_are_not_drift_to_the_running_service(
    controller: Controller, conn: Any, prefix: str, tmp_path: Path
) -> None:
    name = f"{prefix}-job"
    disk = tmp_path / "job.qcow2"
    _write(controller, name, disk, autostart=False)
    controller.start()
    _observed(controller, name, 1)
    assert state_of(conn, name) == "running"

    taken = controller.cli("snapshot", "create", name, "s1")
    assert taken.returncode == 0, taken.stderr
    assert "cannot be reverted" not in taken.stderr
    # A change of the manifest: once it is reconciled, so is everything before it.
    _write(controller, name, disk, autostart=True)
    _observed(controller, name, 2)
    reverted = controller.cli("snapshot", "revert", name, "s1")
    assert reverted.returncode == 0, reverted.stderr
    _write(controller, name, disk, autostart=False)
    _observed(controller, name, 3)

    reasons = _reasons(controller, name)
    assert "SnapshotTaken" in reasons and "Reverted" in reasons
    assert "Resumed" not in reasons, _events(controller, name)
    assert "ReconcileFailed" not in reasons
    assert state_of(conn, name) == "running"
    listed = json.loads(controller.cli("snapshot", "list", name, "-o", "json").stdout)
    [s1] = listed["snapshots"]
    assert (s1["name"], s1["memory"], s1["restorable"]) == ("s1", True, True)

    # A pause by hand is still drift under runStrategy Always, and healed.
    conn.lookupByName(name).suspend()
    wait_for(lambda: "Resumed" in _reasons(controller, name), 20, "the hand pause resumed")
    assert state_of(conn, name) == "running"


def _live_vcpus(conn: Any, name: str) -> int:
    return int(conn.lookupByName(name).vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE))


def test_a_snapshot_after_a_vcpu_hot_plug_is_known_unrestorable_and_a_forced_revert_is_recorded(
    controller: Controller, conn: Any, prefix: str, tmp_path: Path
) -> None:
    name = f"{prefix}-cpu"
    disk = tmp_path / "cpu.qcow2"
    _write(controller, name, disk, vcpus=1, maxVcpus=2)
    controller.start()
    _observed(controller, name, 1)
    _write(controller, name, disk, vcpus=2, maxVcpus=2)
    _observed(controller, name, 2)
    wait_for(lambda: _live_vcpus(conn, name) == 2, 20, "the second vCPU plugged in live")

    taken = controller.cli("snapshot", "create", name, "after-plug")
    assert taken.returncode == 0, taken.stderr
    assert "after-plug cannot be reverted to" in taken.stderr and "hot-plugged" in taken.stderr

    listed = json.loads(controller.cli("snapshot", "list", name, "-o", "json").stdout)
    [snap] = listed["snapshots"]
    assert snap["restorable"] is False and "1 of them hot-plugged" in snap["restoreProblem"]
    table = controller.cli("snapshot", "list", name)
    assert "RESTORABLE" in table.stdout and "no: its memory state holds 2 vCPUs" in table.stdout

    qemu = conn.lookupByName(name).ID()
    refused = controller.cli("snapshot", "revert", name, "after-plug")
    assert refused.returncode == 1
    assert "cannot be reverted to after-plug" in refused.stderr and "--force" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert conn.lookupByName(name).ID() == qemu, "nothing was done: the same QEMU runs"

    forced = controller.cli("snapshot", "revert", name, "after-plug", "--force")
    assert forced.returncode == 1
    assert "Unknown savevm section" in forced.stderr, forced.stderr
    assert "runStrategy Always" in forced.stderr and "Traceback" not in forced.stderr

    failed = [e for e in _events(controller, name) if e["reason"] == "RevertFailed"]
    assert failed and failed[0]["type"] == "Warning"
    assert "Unknown savevm section" in failed[0]["message"]
    assert "starts it again from cold" in failed[0]["message"]
    # runStrategy Always: the service starts the guest again, and says so.
    wait_for(lambda: state_of(conn, name) == "running", 30, "the guest started again")

    def reverted_condition() -> dict[str, Any] | None:
        obj = controller.object(name)
        return next((c for c in (obj or {}).get("conditions", []) if c["type"] == "Reverted"), None)

    def started_after_the_failure() -> bool:
        # The service may start it before or after the command writes its event: the
        # start from the failed state is the one after the revert, wherever it is listed.
        return any(
            e["reason"] == "Started" and "(it was shutoff, failed)" in e["message"]
            for e in _events(controller, name)
        )

    wait_for(started_after_the_failure, 30, "a Started event after RevertFailed")
    condition = wait_for(reverted_condition, 30, "the Reverted condition")
    assert (condition["status"], condition["reason"]) == ("False", "RevertFailed")
    assert "Unknown savevm section" in condition["message"]


def test_a_failed_revert_of_a_manual_guest_leaves_it_shut_off_and_says_so(
    controller: Controller, conn: Any, prefix: str, tmp_path: Path
) -> None:
    name, snap = f"{prefix}-man", f"{prefix}-plugged"
    disk = tmp_path / "man.qcow2"
    _write(controller, name, disk, vcpus=1, maxVcpus=2, runStrategy="Manual")
    controller.start()
    wait_for(lambda: state_of(conn, name) == "shutoff", 30, "defined, not started")
    conn.lookupByName(name).create()  # by hand, as runStrategy Manual means
    _write(controller, name, disk, vcpus=2, maxVcpus=2, runStrategy="Manual")
    _observed(controller, name, 2)
    wait_for(lambda: _live_vcpus(conn, name) == 2, 20, "the second vCPU plugged in live")
    # A Snapshot object of the hot-plugged guest says that it cannot be restored.
    controller.write(
        "snap.yaml",
        "\n".join(
            [
                "apiVersion: kvmrec.io/v1alpha1",
                "kind: Snapshot",
                "metadata:",
                f"  name: {snap}",
                "spec:",
                f"  domain: {name}",
                "",
            ]
        ),
    )
    obj = wait_for(
        lambda: (o := controller.object(snap, "Snapshot")) and o["ready"] and o, 30, "taken"
    )
    assert "hot-plugged" in (obj["details"].get("restoreProblem") or "")
    # So does a policy's snapshot of it, in its event.
    policy = f"{prefix}-pol"
    controller.write(
        "policy.yaml",
        "\n".join(
            [
                "apiVersion: kvmrec.io/v1alpha1",
                "kind: SnapshotPolicy",
                "metadata:",
                f"  name: {policy}",
                "spec:",
                f"  domains: [{name}]",
                "  every: 1h",
                "  retention: {keepLast: 1}",
                "",
            ]
        ),
    )

    def policy_warned() -> bool:
        done = controller.cli("events", f"SnapshotPolicy/{policy}", "-o", "json")
        return any(
            e["reason"] == "SnapshotTaken" and "cannot be reverted to" in e["message"]
            for e in json.loads(done.stdout or '{"events": []}')["events"]
        )

    wait_for(policy_warned, 30, "the policy's snapshot event says it cannot be restored")
    controller.remove("policy.yaml")

    forced = controller.cli("snapshot", "revert", name, snap, "--force")
    assert forced.returncode == 1 and "Unknown savevm section" in forced.stderr
    assert "runStrategy Manual: left as it is" in forced.stderr
    wait_for(
        lambda: (o := controller.object(name)) and o["details"].get("state") == "shutoff",
        30,
        "the service has seen the guest shut off",
    )
    # A change of the manifest: once it is reconciled, so is everything before it.
    _write(controller, name, disk, vcpus=2, maxVcpus=2, runStrategy="Manual", autostart=True)
    _observed(controller, name, 3)
    events = _events(controller, name)
    assert "RevertFailed" in [e["reason"] for e in events]
    assert not [e for e in events if e["reason"] == "Started"], "Manual: kvmrec never starts it"
    assert state_of(conn, name) == "shutoff"
