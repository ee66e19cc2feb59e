"""``kvmrec publish``: the manifest directory written into a store, as ``run`` would take
it, with nothing reconciled: one scan (``--once``) and the service (a change shows up, a
broken file keeps its last good state, an emptied directory is held back until ``kvmrec
prune`` approves, SIGTERM ends it). On a state file, here; the store is the same
interface on etcd."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from realstack import Controller, domain_manifest, state_of, wait_for

from kvmrec.store.lock import in_use

pytestmark = pytest.mark.integration


def publish(ctl: Controller, *args: str) -> list[str]:
    return ctl.command(
        "publish", "--manifests", str(ctl.manifests), "--store", str(ctl.state), *args
    )


def objects(ctl: Controller) -> dict[str, dict[str, Any]]:
    return {o["name"]: o for o in ctl.status()[1].get("objects", [])}


def errors(ctl: Controller) -> dict[str, str]:
    return {e["source"]: e["message"] for e in ctl.status()[1].get("errors", [])}


def test_publish_once_writes_the_directory_and_exits_2_for_a_broken_file(
    controller: Controller, prefix: str, stack: dict[str, str], conn: Any
) -> None:
    kind = stack["KVMREC_DOMAIN_TYPE"]
    a, b = f"{prefix}-pa", f"{prefix}-pb"
    controller.write("a.yaml", domain_manifest(a, kind))
    controller.write("b.yaml", domain_manifest(b, kind))
    done = subprocess.run(
        publish(controller, "--once"), capture_output=True, text=True, env=controller.env()
    )
    assert done.returncode == 0, done.stderr
    assert "2 objects published" in done.stdout
    found = objects(controller)
    assert {found[a]["generation"], found[b]["generation"]} == {1}
    assert state_of(conn, a) is None  # published, not reconciled

    controller.write("a.yaml", domain_manifest(a, kind, memory="lots"))
    done = subprocess.run(
        publish(controller, "--once"), capture_output=True, text=True, env=controller.env()
    )
    assert done.returncode == 2
    assert "a.yaml: line 7: document 1: Domain/" in done.stderr
    assert "'lots' is not a quantity" in errors(controller)["a.yaml"]
    kept = objects(controller)[a]
    assert (kept["generation"], kept["deleting"]) == (1, False)  # the last good spec


def notify_socket(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(60)
    return sock


def test_publish_as_a_service_follows_the_directory_with_runs_safety(
    controller: Controller, prefix: str, stack: dict[str, str], tmp_path: Path
) -> None:
    kind = stack["KVMREC_DOMAIN_TYPE"]
    names = [f"{prefix}-s{i}" for i in range(3)]
    for name in names:
        controller.write(f"{name}.yaml", domain_manifest(name, kind))
    notify = notify_socket(tmp_path)
    env = {**controller.env(), "NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
    with controller.log.open("ab") as log:
        controller.proc = subprocess.Popen(
            publish(controller), stdout=log, stderr=subprocess.STDOUT, env=env
        )
    try:
        ready = notify.recv(4096).decode()
    finally:
        notify.close()
    assert ready.startswith("READY=1"), ready
    assert "3 objects published" in ready
    assert set(objects(controller)) == set(names)

    # A change while it runs shows up in the store.
    controller.write(f"{names[0]}.yaml", domain_manifest(names[0], kind, memory="128Mi"))
    wait_for(lambda: objects(controller)[names[0]]["generation"] == 2, 30, "the new generation")

    # A broken file: a source error, its object at its last good spec.
    controller.write(f"{names[1]}.yaml", domain_manifest(names[1], kind, vcpus="many"))
    wait_for(lambda: f"{names[1]}.yaml" in errors(controller), 30, "the source error")
    broken = objects(controller)[names[1]]
    assert (broken["generation"], broken["deleting"], broken["synced"]) == (1, False, False)

    # Emptied: the guard holds the deletions back, then kvmrec prune approves them and
    # the service (SIGHUP from prune, the holder of the state) makes them.
    for path in controller.manifests.iterdir():
        path.unlink()
    wait_for(
        lambda: "refusing to delete 3 of 3" in errors(controller).get("(directory)", ""),
        30,
        "the mass-delete guard",
    )
    assert not any(o["deleting"] for o in objects(controller).values())
    approved = controller.cli("prune", "--manifests", str(controller.manifests), "--yes")
    assert approved.returncode == 0, approved.stderr
    wait_for(lambda: all(o["deleting"] for o in objects(controller).values()), 30, "the deletions")
    assert controller.running  # nothing of this ended it

    assert controller.proc is not None
    controller.proc.terminate()
    assert controller.proc.wait(15) == 0
    assert "SIGTERM: stopping" in controller.log_text()


def test_publish_on_a_state_another_service_holds_exits_1(controller: Controller) -> None:
    controller.start()
    wait_for(lambda: in_use(controller.state), 30, "run holding the state")
    assert controller.proc is not None
    done = subprocess.run(
        publish(controller, "--once"), capture_output=True, text=True, env=controller.env()
    )
    assert done.returncode == 1
    assert str(controller.proc.pid) in done.stderr


def test_objects_applied_by_hand_stay_beside_a_published_directory(
    controller: Controller, prefix: str, stack: dict[str, str], tmp_path: Path
) -> None:
    kind = stack["KVMREC_DOMAIN_TYPE"]
    a, b, by_hand = f"{prefix}-da", f"{prefix}-db", f"{prefix}-dh"
    controller.write("a.yaml", domain_manifest(a, kind))
    controller.write("b.yaml", domain_manifest(b, kind))
    draft = tmp_path / "by-hand.yaml"
    draft.write_text(domain_manifest(by_hand, kind))
    applied = controller.cli("apply", "-f", str(draft))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.strip() == f"Domain/{by_hand} created"
    for _ in range(2):  # and again: the directory's pass does not take it back
        done = subprocess.run(
            publish(controller, "--once"), capture_output=True, text=True, env=controller.env()
        )
        assert done.returncode == 0, done.stderr
    controller.remove("b.yaml")
    done = subprocess.run(
        publish(controller, "--once"), capture_output=True, text=True, env=controller.env()
    )
    assert done.returncode == 0, done.stderr  # 1 of the directory's 2: no guard
    found = objects(controller)
    assert {n: o["deleting"] for n, o in found.items()} == {a: False, b: True, by_hand: False}
    assert found[by_hand]["source"] == str(draft)
