"""``kvmrec run`` killed with SIGKILL at random points while ten guests converge, and
stopped with SIGTERM mid-work. The real stack's daemons stay up; the SIGTERM test runs
beside the rest of the suite, the SIGKILL one (ten convergences of ten guests) after it
(``heavy``: beside the TCG guests of other tests it stretched their boots past their waits).

Every test asserts real outcomes (libvirt's domains, ``kvmrec status``, the sqlite store)
and prints its figures (``pytest -s``); tests/faults/README.md quotes them. No timing is
asserted except the SIGTERM exit budget, which is part of the contract.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fault_checks import (
    connect,
    converged,
    libvirt_invariants,
    prefixed,
    report,
    spread,
    store_ok,
    wait_timed,
    write_domains,
)
from realstack import Controller, wait_for

pytestmark = pytest.mark.integration

SEED = 20261125
# Ten guests: QEMU starts about one KVM guest a second here, so a convergence lasts a few
# seconds, long enough for most kills to land mid-work, short enough for ten of them.
GUESTS = 10


@pytest.mark.heavy
def test_kill9_at_random_points_while_ten_guests_converge(
    controller: Controller, prefix: str, stack: dict[str, str], tmp_path: Path
) -> None:
    started = time.monotonic()
    root = tmp_path
    rng = random.Random(SEED)
    names = [f"{prefix}-g{i:02d}" for i in range(GUESTS)]
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
            # Each cycle is a convergence of the guests from nothing, on a state file of
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
    assert (kills, restarts, final["running"]) == (10, 10, GUESTS)
    assert mid_work >= 5, f"most kills should land during work, got {mid_work}: {at_kill}"


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
