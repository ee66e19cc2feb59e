"""Process and daemon faults on the real stack: ``kvmrec run`` killed with SIGKILL at
random points, stopped with SIGTERM mid-work, and libvirtd, ovsdb-server/ovs-vswitchd and
etcd killed and restarted under a running service.

Every test asserts real outcomes (libvirt's domains, OVSDB's bridges, ``kvmrec status``,
the sqlite store) and prints its figures (``pytest -s``); tests/faults/README.md quotes
them. No timing is asserted except the SIGTERM exit budget, which is part of the contract.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import statistics
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import libvirt
import pytest
from realstack import REPO, Controller, condition, ovs_ports, state_of, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.disruptive]

OWNER_NS = "https://kvmrec.io/xmlns/owner/v1alpha1"
STACK_SCRIPT = REPO / "scripts" / "real-stack.sh"
PIDS = REPO / ".stack" / "pids"
SEED = 20261125


# ----------------------------------------------------------------------------- helpers


def stack_up() -> None:
    subprocess.run(["bash", str(STACK_SCRIPT), "up"], check=True, capture_output=True)


def stack_answers(daemon: str) -> bool:
    done = subprocess.run(
        ["bash", str(STACK_SCRIPT), "status"], capture_output=True, text=True, check=False
    )
    return any(line.split()[:2] == [daemon, "answers"] for line in done.stdout.splitlines() if line)


def report(title: str, **figures: Any) -> None:
    """One line of figures per test, for README.md (visible with ``pytest -s``)."""
    body = ", ".join(f"{k}: {v}" for k, v in figures.items())
    print(f"\n[faults] {title}: {body}", flush=True)


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    return (
        f"min {min(values):.2f}s / median {statistics.median(values):.2f}s / max {max(values):.2f}s"
    )


def write_domains(ctl: Controller, names: list[str]) -> None:
    for name in names:
        ctl.write(
            f"{name}.yaml",
            json.dumps(
                {
                    "apiVersion": "kvmrec.io/v1alpha1",
                    "kind": "Domain",
                    "metadata": {"name": name},
                    "spec": {"type": ctl.stack["KVMREC_DOMAIN_TYPE"], "memory": "64Mi"},
                }
            ),
        )


def connect(stack: dict[str, str]) -> Any:
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt.open(stack["LIBVIRT_DEFAULT_URI"])


def prefixed(conn: Any, prefix: str) -> list[Any]:
    return [d for d in conn.listAllDomains(0) if d.name().startswith(prefix + "-")]


def stamped(dom: Any) -> bool:
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    return root.find(f"metadata/{{{OWNER_NS}}}owner") is not None


def store_ok(state: Path) -> bool:
    if not state.exists():
        return True  # killed before it made its store: nothing to corrupt
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        db.close()


def libvirt_invariants(conn: Any, prefix: str, expected: set[str]) -> dict[str, Any]:
    """What must hold at any instant, even right after a SIGKILL: nothing but manifests'
    domains, no duplicate, everything kvmrec defined carries its stamp."""
    doms = prefixed(conn, prefix)
    names = [d.name() for d in doms]
    uuids = [d.UUIDString() for d in doms]
    return {
        "names": set(names),
        "duplicates": (len(names) - len(set(names))) + (len(uuids) - len(set(uuids))),
        "orphans": sorted(set(names) - expected),
        "unstamped": sorted(d.name() for d in doms if not stamped(d)),
        "running": sum(1 for d in doms if d.isActive()),
    }


def converged(ctl: Controller, conn: Any, prefix: str, expected: set[str]) -> bool:
    """Exactly the expected guests exist and run, and status says so, store sound."""
    live = libvirt_invariants(conn, prefix, expected)
    assert live["duplicates"] == 0, live
    assert live["orphans"] == [], live
    if live["names"] != expected or live["running"] != len(expected):
        return False
    code, body = ctl.status()
    objects = body.get("objects", [])
    if code != 0 or len(objects) != len(expected):
        return False
    if {o["name"] for o in objects} != expected:
        return False
    if not all(
        o["kind"] == "Domain"
        and o["synced"]
        and o["ready"]
        and o["generation"] == 1
        and o["observedGeneration"] == 1
        for o in objects
    ):
        return False
    return store_ok(ctl.state)


def wait_timed(predicate: Callable[[], Any], timeout: float, what: str) -> float:
    started = time.monotonic()
    wait_for(predicate, timeout, what)
    return time.monotonic() - started


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


# ------------------------------------------------------------------ 1. SIGKILL of kvmrec


def test_kill9_at_random_points_while_twenty_guests_converge(
    controller: Controller, prefix: str, stack: dict[str, str], tmp_path: Path
) -> None:
    started = time.monotonic()
    root = tmp_path
    rng = random.Random(SEED)
    names = [f"{prefix}-g{i:02d}" for i in range(20)]
    expected = set(names)
    write_domains(controller, names)
    conn = connect(stack)

    # Seven kills in the first ~3 s of a convergence, three "mid-way" (scaled, once the
    # first full convergence has been timed).
    early = [rng.uniform(0.15, 3.0) for _ in range(7)]
    late_fractions = [rng.uniform(0.35, 0.65) for _ in range(3)]
    order = list(range(10))
    rng.shuffle(order)  # which cycles get a mid-way kill

    kills = restarts = 0
    mid_work = 0  # kills that landed while work was still outstanding
    delays: list[float] = []
    reconverge: list[float] = []
    full_converge: float | None = None
    at_kill: list[str] = []
    try:
        for cycle in range(10):
            # Each cycle is a convergence of the 20 guests from nothing, on a state file of
            # its own. (Destroying guests by hand between cycles instead would be healed too,
            # but kvmrec rightly counts a guest stopping soon after its start as a quick
            # failure and backs off - CrashLoopBackOff, persisted in the store - which makes
            # later cycles measure the backoff rather than the restart.)
            controller.state = root / f"state-{cycle}.db"
            if cycle:
                p0 = time.monotonic()

                def undefine(dom: Any) -> None:
                    if dom.isActive():
                        dom.destroy()
                    dom.undefine()

                with ThreadPoolExecutor(8) as pool:
                    list(pool.map(undefine, prefixed(conn, prefix)))
                assert prefixed(conn, prefix) == []
                print(f"[faults] removed the guests in {time.monotonic() - p0:.2f}s", flush=True)

            t0 = time.monotonic()
            controller.start(resync=300)
            if order.index(cycle) < 3 and full_converge is not None:
                delay = min(full_converge * late_fractions[order.index(cycle)], 8.0)
            else:
                delay = early.pop() if early else rng.uniform(0.15, 3.0)
            delays.append(delay)
            time.sleep(max(0.0, delay - (time.monotonic() - t0)))
            controller.kill9()
            kills += 1

            live = libvirt_invariants(conn, prefix, expected)
            assert live["duplicates"] == 0 and live["orphans"] == [], live
            assert live["unstamped"] == [], f"half-applied domains after SIGKILL: {live}"
            assert store_ok(controller.state), "store corrupt after SIGKILL"
            if live["names"] != expected or live["running"] < len(expected):
                mid_work += 1
            at_kill.append(f"{len(live['names'])}def/{live['running']}run")

            controller.start(resync=300)
            restarts += 1
            took = wait_timed(
                lambda: converged(controller, conn, prefix, expected),
                90,
                f"converged after restart {restarts}; log: {controller.log}",
            )
            reconverge.append(took)
            print(
                f"[faults] cycle {cycle}: delay {delay:.2f}s, at kill {at_kill[-1]}, "
                f"re-converged in {took:.2f}s (t={time.monotonic() - started:.1f}s)",
                flush=True,
            )
            if full_converge is None:
                full_converge = delay + took
            code = subprocess.run(
                controller.command("status", "--state", str(controller.state)),
                capture_output=True,
                env=controller.env(),
                check=False,
            ).returncode
            assert code == 0
            assert controller.running
            controller.stop()

        # The end: one more start on the final store, nothing to do, all there.
        controller.start(resync=300)
        wait_for(lambda: converged(controller, conn, prefix, expected), 30, "final")
        final = libvirt_invariants(conn, prefix, expected)
    finally:
        controller.stop()
        conn.close()

    report(
        "kill -9 of kvmrec run",
        kills=kills,
        restarts=restarts,
        guests=len(names),
        kills_with_work_outstanding=mid_work,
        delays=" ".join(f"{d:.2f}" for d in delays),
        state_at_kill=" ".join(at_kill),
        final_running=final["running"],
        duplicates=final["duplicates"],
        orphans=len(final["orphans"]),
        unstamped=len(final["unstamped"]),
        reconverge=spread(reconverge),
        total=f"{time.monotonic() - started:.1f}s",
    )
    assert (kills, restarts, final["running"]) == (10, 10, 20)
    assert mid_work >= 5, f"most kills should land during work, got {mid_work}: {at_kill}"


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


# ------------------------------------------------------------------- 5. SIGTERM mid-work


def test_sigterm_during_work_exits_cleanly_and_a_restart_finishes(
    controller: Controller, prefix: str, stack: dict[str, str]
) -> None:
    names = [f"{prefix}-t{i}" for i in range(10)]
    expected = set(names)
    write_domains(controller, names)
    conn = connect(stack)
    controller.start(resync=300)
    time.sleep(0.5)
    assert controller.proc is not None
    controller.proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    try:
        code = controller.proc.wait(10)
    except subprocess.TimeoutExpired:
        controller.proc.kill()
        controller.proc.wait()
        pytest.fail(f"kvmrec run ignored SIGTERM for 10 s; log: {controller.log}")
    exit_s = time.monotonic() - t0
    assert code == 0, controller.log_text()[-3000:]

    live = libvirt_invariants(conn, prefix, expected)
    assert live["duplicates"] == 0 and live["orphans"] == [], live
    assert live["unstamped"] == [], f"half-applied: {live}"
    assert store_ok(controller.state)
    defined_at_stop, running_at_stop = len(live["names"]), live["running"]

    controller.start(resync=300)
    took = wait_timed(lambda: converged(controller, conn, prefix, expected), 40, "finished")
    final = libvirt_invariants(conn, prefix, expected)
    assert final["unstamped"] == [] and final["running"] == 10
    manifests = {p.stem for p in controller.manifests.glob("*.yaml")}
    assert final["names"] <= manifests
    controller.stop()
    conn.close()
    report(
        "SIGTERM mid-work",
        guests=10,
        exit_code=code,
        exit_took=f"{exit_s:.2f}s",
        defined_at_exit=defined_at_stop,
        running_at_exit=running_at_stop,
        restart_finished_in=f"{took:.2f}s",
        final_running=final["running"],
        unstamped=len(final["unstamped"]),
        orphans=len(final["orphans"]),
    )


def teardown_module() -> None:
    stack_up()  # whatever happened above, leave the stack up
