"""Safe input, end to end on qemu:///system: kvmrec runs as root, so what it loads and where
its disks may go is checked before anything is done.

A manifest that others could have written is refused with the fix (status, plan, validate)
while its neighbours converge, and is picked up once fixed with chmod alone; a disk outside
the disk roots blocks its Domain (DiskPathNotAllowed) and no image file is ever made.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from realstack import Controller, condition, domain_manifest, plan_text, state_of, wait_for

pytestmark = pytest.mark.integration

HINT = "writable by others (mode 0666); fix with chmod go-w, or run with --insecure-manifests"


def errors(controller: Controller) -> dict[str, str]:
    _, body = controller.status()
    return {e["source"]: e["message"] for e in body.get("errors", [])}


def cli(controller: Controller, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        controller.command(*args),
        capture_output=True,
        text=True,
        env=controller.env(),
        timeout=60,
        check=False,
    )


def test_a_world_writable_manifest_is_refused_while_its_neighbour_runs(
    controller: Controller, conn: Any, prefix: str, stack: dict[str, str]
) -> None:
    good, bad = f"{prefix}-good", f"{prefix}-bad"
    domain_type = stack["KVMREC_DOMAIN_TYPE"]
    controller.write("good.yaml", domain_manifest(good, domain_type))
    controller.write("bad.yaml", domain_manifest(bad, domain_type))
    (controller.manifests / "bad.yaml").chmod(0o666)
    controller.start()

    wait_for(lambda: state_of(conn, good) == "running", 30, f"{good} running")
    wait_for(lambda: "bad.yaml" in errors(controller), 10, "bad.yaml reported")
    assert errors(controller) == {"bad.yaml": HINT}
    code, _ = controller.status()
    assert code == 2  # an invalid manifest
    assert state_of(conn, bad) is None and controller.object(bad) is None

    # The dry run and the offline check judge it exactly as the service does.
    planned = plan_text(controller, "-o", "json")
    assert planned.returncode == 2
    assert {"source": "bad.yaml", "message": HINT} in json.loads(planned.stdout)["errors"]
    validated = cli(controller, "validate", str(controller.manifests))
    assert validated.returncode == 2
    assert f"{controller.manifests}/bad.yaml: {HINT}" in validated.stdout
    assert (
        cli(controller, "validate", "--insecure-manifests", str(controller.manifests)).returncode
        == 0
    )

    # chmod alone, not a byte changed: the file is loaded.
    (controller.manifests / "bad.yaml").chmod(0o644)
    wait_for(lambda: state_of(conn, bad) == "running", 30, f"{bad} running once fixed")
    wait_for(lambda: errors(controller) == {}, 10, "the error cleared")
    assert state_of(conn, good) == "running"


def test_a_disk_outside_the_disk_roots_blocks_the_domain_and_makes_no_image(
    controller: Controller, conn: Any, prefix: str, stack: dict[str, str], tmp_path: Path
) -> None:
    name = f"{prefix}-esc"
    # A sibling of the test's directory: outside its --disk-root and the default roots.
    outside = tmp_path.parent / f"{tmp_path.name}-outside" / "esc.qcow2"
    controller.write(
        "esc.yaml",
        domain_manifest(
            name, stack["KVMREC_DOMAIN_TYPE"], disks=[{"path": str(outside), "size": "16Mi"}]
        ),
    )
    controller.start()
    obj = wait_for(
        lambda: (o := controller.object(name)) and condition(o, "Ready") and o, 20, "status"
    )
    for type_ in ("Ready", "Synced"):
        cond = condition(obj, type_)
        assert cond is not None and (cond["status"], cond["reason"]) == (
            "False",
            "DiskPathNotAllowed",
        )
        assert cond["message"].startswith(
            f"spec.disks[0].path: {outside} is outside the disk roots"
        )
        assert f"({tmp_path})" in cond["message"]
    assert state_of(conn, name) is None  # nothing defined
    assert not outside.exists() and not outside.parent.exists()  # nothing created
    code, _ = controller.status()
    assert code == 2
