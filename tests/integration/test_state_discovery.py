"""Commands run by hand find the state of the running service (its configuration file,
named by $KVMREC_CONFIG), and say so when the state they are given has no service."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from realstack import Controller, domain_manifest, state_of, wait_for

pytestmark = pytest.mark.integration


def configure(ctl: Controller) -> Path:
    """A configuration file for the service, as `make run` writes one."""
    path = ctl.root / "config.yaml"
    path.write_text(
        f"manifests: {ctl.manifests}\nstate: {ctl.state}\n"
        f"connect: {ctl.stack['LIBVIRT_DEFAULT_URI']}\n"
    )
    path.chmod(0o644)
    with ctl.log.open("ab") as log:
        ctl.proc = subprocess.Popen(
            ctl.command("run", "--config", str(path), "--resync", "30"),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=ctl.env(),
        )
    return path


def by_hand(ctl: Controller, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ctl.command(*args), capture_output=True, text=True, env=env, timeout=120, check=False
    )


def shell(ctl: Controller, config: Path) -> dict[str, str]:
    """The operator's other shell: the export line `make run` prints, nothing else."""
    env = {k: v for k, v in ctl.env().items() if not k.startswith("KVMREC_")}
    return {**env, "KVMREC_CONFIG": str(config)}


def test_a_snapshot_by_hand_records_into_the_state_of_the_running_service(
    controller: Controller, prefix: str, conn: object, tmp_path: Path
) -> None:
    name = f"{prefix}-where"
    config = configure(controller)
    disks = json.dumps([{"path": str(tmp_path / "where.qcow2"), "size": "16Mi"}])
    controller.write(
        "dom.yaml",
        domain_manifest(name, controller.stack["KVMREC_DOMAIN_TYPE"]) + f"  disks: {disks}\n",
    )
    wait_for(lambda: state_of(conn, name) == "running", 60, "the guest running")
    env = shell(controller, config)

    taken = by_hand(controller, env, "snapshot", "create", name, "by-hand")
    assert taken.returncode == 0, taken.stderr
    assert "warning" not in taken.stderr, taken.stderr

    listed = by_hand(controller, env, "snapshot", "list", name)
    row = next(line for line in listed.stdout.splitlines() if line.startswith("by-hand"))
    assert "not kvmrec's" not in row, listed.stdout
    events = by_hand(controller, env, "events", f"Domain/{name}", "-o", "json")
    assert events.returncode == 0, events.stderr
    assert "SnapshotTaken" in {e["reason"] for e in json.loads(events.stdout)["events"]}, (
        events.stdout
    )


def test_a_command_on_a_state_no_service_uses_says_so(
    controller: Controller, prefix: str, tmp_path: Path
) -> None:
    config = configure(controller)
    env = shell(controller, config)
    wait_for(lambda: controller.state.exists(), 30, "the service's state file")
    # Another state file, which a run --once left behind and no service holds now.
    empty = tmp_path / "empty"
    empty.mkdir()
    other = tmp_path / "other.db"
    once = by_hand(
        controller, env, "run", "--once", "--manifests", str(empty), "--state", str(other)
    )
    assert once.returncode == 0, once.stderr

    served = by_hand(controller, env, "status")
    assert served.returncode in (0, 2), served.stderr
    assert "warning" not in served.stderr, served.stderr
    for command in (("status",), ("events",), ("snapshot", "list", f"{prefix}-none")):
        unserved = by_hand(controller, env, *command, "--state", str(other))
        assert f"no kvmrec service is running on {other}" in unserved.stderr, (
            command,
            unserved.stderr,
        )
    # The variable alone points at it just the same.
    moved = by_hand(controller, {**env, "KVMREC_STATE": str(other)}, "events")
    assert f"no kvmrec service is running on {other}" in moved.stderr, moved.stderr
    assert os.path.exists(controller.state)
