"""A broken manifest file on the real stack: its guest keeps its last good spec and runs on,
its status says Synced=False InvalidManifest with the file and line, the file going invalid
and valid again are events (and log lines, once each), and other objects are unaffected.
Read-only commands print nothing on stderr.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from realstack import Controller, domain_manifest, plan_text, state_of, wait_for

from kvmrec import store as stores
from kvmrec.api.kinds import ObjectKey

pytestmark = pytest.mark.integration


def manifest(stack: dict[str, str], name: str, **spec: Any) -> str:
    return domain_manifest(name, stack["KVMREC_DOMAIN_TYPE"], **spec)


def synced(controller: Controller, name: str) -> dict[str, Any] | None:
    """The Synced condition of Domain ``name`` as ``kvmrec status -o json`` shows it."""
    obj = controller.object(name)
    if obj is None:
        return None
    return next((c for c in obj["conditions"] if c["type"] == "Synced"), None)


def converged(controller: Controller, name: str) -> bool:
    obj = controller.object(name)
    return bool(obj and obj["synced"] and obj["ready"] and not obj["drift"])


def manifest_events(controller: Controller, name: str) -> list[tuple[str, str]]:
    store = stores.open(controller.state, create=False)
    try:
        found = store.events(ObjectKey("Domain", name))
    finally:
        store.close()
    return [
        (e.reason, e.message) for e in found if e.reason in ("ManifestInvalid", "ManifestValid")
    ]


def test_a_broken_file_unsyncs_its_guest_which_runs_on_with_its_last_spec(
    controller: Controller, conn: Any, prefix: str, stack: dict[str, str]
) -> None:
    guest, other = f"{prefix}-g", f"{prefix}-o"
    good = manifest(stack, guest, vcpus=1)
    controller.write("guest.yaml", good)
    controller.write("other.yaml", manifest(stack, other, vcpus=1))
    controller.start()
    for name in (guest, other):
        wait_for(lambda n=name: converged(controller, n), 30, f"{name} converged")

    broken = [
        # An unclosed `[` on line 7: reported there, with where PyYAML gave up (line 8).
        (good.replace("  vcpus: 1", "  vcpus: [1"), "line 7: invalid YAML: while parsing a flow"),
        # A schema error, beside an edit that must not be applied while the file is broken.
        (manifest(stack, guest, vcpus="two", memory="128Mi"), "line 7: document 1: "),
    ]
    for text, where in broken:
        controller.write("guest.yaml", text)
        condition = wait_for(
            lambda: (c := synced(controller, guest)) and c["reason"] == "InvalidManifest" and c,
            15,
            "Synced=False InvalidManifest",
        )
        assert condition["status"] == "False"
        assert condition["message"].startswith(f"guest.yaml: {where}")
        obj = controller.object(guest)
        assert obj is not None and obj["synced"] is False

        # Its last good spec stays in force: destroyed by hand, the guest is started again
        # as it was, and the reconcile that did it leaves it shown as not in sync.
        before = obj["lastReconcileTime"]
        conn.lookupByName(guest).destroy()
        wait_for(lambda: state_of(conn, guest) == "running", 15, "healed with the last spec")
        wait_for(
            lambda b=before: (o := controller.object(guest)) and o["lastReconcileTime"] != b,
            15,
            "the heal reconciled",
        )
        assert conn.lookupByName(guest).maxMemory() == 64 * 1024  # KiB: not the 128Mi edit
        condition = synced(controller, guest)
        assert condition is not None and condition["reason"] == "InvalidManifest"

        code, body = controller.status(f"Domain/{other}")
        assert code == 0, body
        code, body = controller.status()
        assert code == 2
        assert [e["source"] for e in body["errors"]] == ["guest.yaml"]

        controller.write("guest.yaml", good)
        wait_for(lambda: converged(controller, guest), 15, "synced again once fixed")
        code, body = controller.status()
        assert (code, body["errors"]) == (0, [])

    found = manifest_events(controller, guest)
    assert [reason for reason, _ in found] == ["ManifestInvalid", "ManifestValid"] * 2
    assert found[0][1].startswith("guest.yaml: line 7: invalid YAML")
    assert found[2][1].startswith("guest.yaml: line 7: document 1: ")
    assert found[1][1] == "guest.yaml is valid again"

    # The log tells the same story, once per change, naming the object as KIND/NAME.
    log = controller.log_text()
    assert log.count(f"Domain/{guest}: ManifestInvalid: guest.yaml: line 7") == 2
    assert log.count(f"Domain/{guest}: ManifestValid: guest.yaml is valid again") == 2
    assert "ObjectKey(" not in log


def test_read_only_commands_print_nothing_on_stderr(
    controller: Controller, prefix: str, stack: dict[str, str]
) -> None:
    name = f"{prefix}-quiet"
    controller.write("quiet.yaml", manifest(stack, name))
    controller.start()
    wait_for(lambda: converged(controller, name), 30, f"{name} converged")

    done = controller.cli("status")
    assert (done.returncode, done.stderr) == (0, "")
    assert name in done.stdout
    done = plan_text(controller, "--connect", stack["LIBVIRT_DEFAULT_URI"])
    assert (done.returncode, done.stderr) == (0, ""), done.stdout
    done = controller.cli("history", f"Domain/{name}")
    assert (done.returncode, done.stderr) == (0, "")
    done = subprocess.run(
        controller.command("validate", str(controller.manifests)),
        capture_output=True,
        text=True,
        env=controller.env(),
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
