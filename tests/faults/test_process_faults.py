"""Daemon faults on the real stack: libvirtd, ovsdb-server/ovs-vswitchd and etcd killed
and restarted under a running ``kvmrec run`` (test_kvmrec_kills.py kills kvmrec itself).

Every test asserts real outcomes (libvirt's domains, OVSDB's bridges, ``kvmrec status``,
the sqlite store) and prints its figures (``pytest -s``); tests/faults/README.md quotes
them. No timing is asserted except the SIGTERM exit budget, which is part of the contract.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_checks import (
    connect,
    converged,
    libvirt_invariants,
    report,
    store_ok,
    wait_timed,
    write_domains,
)
from realstack import REPO, Controller, condition, ovs_ports, state_of, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.disruptive]

STACK_SCRIPT = REPO / "scripts" / "real-stack.sh"
PIDS = REPO / ".stack" / "pids"


# ----------------------------------------------------------------------------- helpers


def stack_up() -> None:
    subprocess.run(["bash", str(STACK_SCRIPT), "up"], check=True, capture_output=True)


def stack_answers(daemon: str) -> bool:
    done = subprocess.run(
        ["bash", str(STACK_SCRIPT), "status"], capture_output=True, text=True, check=False
    )
    return any(line.split()[:2] == [daemon, "answers"] for line in done.stdout.splitlines() if line)


def kill_pidfile(path: Path, sig: int = signal.SIGKILL) -> int:
    pid = int(path.read_text().strip())
    subprocess.run(["kill", f"-{int(sig)}", str(pid)], check=True)
    return pid


def gone(pid: int, timeout: float = 10.0) -> None:
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), timeout, f"pid {pid} gone")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (OSError, IndexError):
        return True


@pytest.fixture
def restore_stack() -> Iterator[None]:
    yield
    stack_up()


# -------------------------------------------------------------- 2. libvirtd SIGKILL


def test_libvirtd_killed_and_restarted_under_a_running_kvmrec(
    controller: Controller, prefix: str, stack: dict[str, str], restore_stack: None
) -> None:
    if not (PIDS / "libvirtd.pid").exists():
        pytest.fail("this test restarts the libvirtd that scripts/real-stack.sh started")
    names = [f"{prefix}-l{i}" for i in range(3)]
    expected = set(names)
    write_domains(controller, names)
    controller.start(resync=300)
    conn = connect(stack)
    wait_for(lambda: converged(controller, conn, prefix, expected), 40, "converged")
    uuids = {n: conn.lookupByName(n).UUIDString() for n in names}
    conn.close()

    down_at = time.monotonic()
    pid = int(Path("/run/libvirtd.pid").read_text().strip())
    subprocess.run(["kill", "-9", str(pid)], check=True)
    try:
        gone(pid)

        def all_unknown() -> list[dict[str, Any]] | None:
            _, body = controller.status()
            objs: list[dict[str, Any]] = body.get("objects", [])
            readies = [condition(o, "Ready") for o in objs]
            if len(objs) == 3 and all(r and r["status"] == "Unknown" for r in readies):
                return objs
            return None

        objs = wait_for(all_unknown, 30, "Ready=Unknown on every object while libvirtd is down")
        reasons = {condition(o, "Ready")["reason"] for o in objs}  # type: ignore[index]
        assert reasons == {"LibvirtUnavailable"}, objs
        unknown_after = time.monotonic() - down_at
        assert controller.running, "kvmrec must survive libvirtd going away"
    finally:
        stack_up()
    up_at = time.monotonic()

    conn = connect(stack)
    back = wait_timed(
        lambda: converged(controller, conn, prefix, expected), 60, "re-converged after restart"
    )
    assert {n: conn.lookupByName(n).UUIDString() for n in names} == uuids, "same guests"
    victim = conn.lookupByName(names[0])
    first_id = victim.ID()
    victim.destroy()
    destroyed = time.monotonic()
    wait_for(
        lambda: (
            state_of(conn, names[0]) == "running" and conn.lookupByName(names[0]).ID() != first_id
        ),
        30,
        "destroyed guest healed after libvirtd came back",
    )
    healed = time.monotonic() - destroyed
    wait_for(lambda: converged(controller, conn, prefix, expected), 30, "all Ready")
    assert controller.running
    final = libvirt_invariants(conn, prefix, expected)
    conn.close()
    report(
        "libvirtd kill -9",
        guests=3,
        kvmrec_up=controller.running,
        ready_unknown_after=f"{unknown_after:.2f}s",
        reason="LibvirtUnavailable",
        stack_up_took=f"{up_at - down_at - unknown_after:.2f}s",
        reconverged_after_up=f"{back:.2f}s",
        destroyed_guest_healed_in=f"{healed:.2f}s",
        final_running=final["running"],
        duplicates=final["duplicates"],
        orphans=len(final["orphans"]),
    )


# --------------------------------------------------- 3. ovsdb-server + ovs-vswitchd


def _bridge_exists(name: str) -> bool:
    return (
        subprocess.run(
            ["ovs-vsctl", "--timeout=5", "br-exists", name], check=False, capture_output=True
        ).returncode
        == 0
    )


def test_ovsdb_and_vswitchd_killed_and_restarted_under_a_running_kvmrec(
    controller: Controller, prefix: str, restore_stack: None
) -> None:
    for daemon in ("ovsdb-server", "ovs-vswitchd"):
        if not (PIDS / f"{daemon}.pid").exists():
            pytest.fail(f"this test restarts the {daemon} that scripts/real-stack.sh started")
    short = prefix[3:7]
    bridge, uplink = f"kf{short}", f"kf{short}up"
    controller.write(
        "br.yaml",
        json.dumps(
            {
                "apiVersion": "kvmrec.io/v1alpha1",
                "kind": "OvsBridge",
                "metadata": {"name": bridge},
                "spec": {
                    "ports": [{"name": uplink, "type": "internal"}],
                    "failMode": "standalone",
                },
            }
        ),
    )
    try:
        controller.start(resync=300)

        def bridge_ready() -> bool:
            obj = controller.object(bridge, "OvsBridge")
            return bool(
                obj
                and obj["ready"]
                and obj["synced"]
                and _bridge_exists(bridge)
                and uplink in ovs_ports(bridge)
            )

        wait_for(bridge_ready, 30, "bridge Ready with its port")

        pids = [
            kill_pidfile(Path("/run/openvswitch/ovs-vswitchd.pid")),
            kill_pidfile(Path("/run/openvswitch/ovsdb-server.pid")),
        ]
        down_at = time.monotonic()
        seen: set[str] = set()
        try:
            for pid in pids:
                gone(pid)
            # While OVS is down: the bridge's status is Unknown (OvsdbUnavailable) or,
            # if no reconcile ran meanwhile, still Ready. Sample it for a couple of seconds.
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                ready = condition(controller.object(bridge, "OvsBridge"), "Ready")
                assert ready is not None
                seen.add(f"{ready['status']}/{ready['reason']}")
                assert (ready["status"], ready["reason"]) in {
                    ("Unknown", "OvsdbUnavailable"),
                } or ready["status"] == "True", ready
                assert controller.running
                time.sleep(0.3)
        finally:
            stack_up()
        up_at = time.monotonic()
        back = wait_timed(bridge_ready, 30, "bridge Ready with its port after OVS restart")
        assert controller.running, "kvmrec must survive OVS going away"
        assert store_ok(controller.state)
        report(
            "ovsdb-server + ovs-vswitchd kill -9",
            bridges=1,
            ports=1,
            kvmrec_up=controller.running,
            ready_seen_while_down=" ".join(sorted(seen)),
            ovs_down_for=f"{up_at - down_at:.2f}s",
            ready_again_after_up=f"{back:.2f}s",
        )
    finally:
        controller.stop()
        subprocess.run(
            ["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", bridge],
            check=False,
            capture_output=True,
        )


# -------------------------------------------------------------------------- 4. etcd


def test_etcd_stopped_does_not_matter(
    controller: Controller, prefix: str, stack: dict[str, str], restore_stack: None
) -> None:
    if not (PIDS / "etcd.pid").exists():
        pytest.fail("this test stops the etcd that scripts/real-stack.sh started")
    first = [f"{prefix}-e0"]
    write_domains(controller, first)
    controller.start(resync=300)
    conn = connect(stack)
    wait_for(lambda: converged(controller, conn, prefix, set(first)), 40, "converged")

    pid = kill_pidfile(PIDS / "etcd.pid", signal.SIGTERM)
    try:
        gone(pid, 20)
        assert not stack_answers("etcd")
        later = [f"{prefix}-e1"]
        write_domains(controller, later)
        took = wait_timed(
            lambda: converged(controller, conn, prefix, set(first + later)),
            40,
            "a new manifest converged with etcd down",
        )
        assert controller.running
        assert "Traceback" not in controller.log_text()
    finally:
        stack_up()
    assert stack_answers("etcd")
    assert controller.running
    conn.close()
    report(
        "etcd stopped",
        kvmrec_up=True,
        new_manifest_converged_in=f"{took:.2f}s",
        etcd_restarted=True,
    )


def teardown_module() -> None:
    stack_up()  # whatever happened above, leave the stack up
