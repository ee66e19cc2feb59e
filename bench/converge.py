"""Converge and no-op resync: kvmrec beside a plain libvirt-python loop, in the same run.

For N guests on one libvirt URI this prints one JSON object with, for each measurement,
the plain loop's time (the floor: the same libvirt calls with nothing around them) and
kvmrec's, and their ratio:

- converge: from an empty host to N running guests. The plain loop defines and starts the
  guests one by one; kvmrec parses N manifests, stores them, and converges with its workers.
  Each is run --converge-repeat times, alternating, from an empty host and a new state
  file each time; the best of each is shown (both vary by a third from run to run here).
- noop_resync: everything already converged. The plain loop lists the domains and reads
  each one's XML; kvmrec runs one periodic resync pass until its queue is idle again
  (full_pass_s: the hourly pass that reconciles every guest whatever its fingerprint).
- heal (real URIs only): a guest destroyed by hand, until it runs again, over --trials,
  beside the plain loop's floor: the same destroy followed at once by its own start.
- rss_mb and idle_cpu: resident memory with N managed objects, and the CPU the service
  burns while idle for --idle seconds.

Usage:
  python bench/converge.py --connect test:///default -n 1000
  python bench/converge.py --connect qemu:///system -n 20 --type kvm
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import libvirt
from guests import remove_guests

from kvmrec.service import Service
from kvmrec.settings import Settings

PREFIX = "kb-"


def guest_xml(name: str, virt_type: str) -> str:
    # The same definition kvmrec writes for a minimal manifest, minus the ownership stamp.
    return (
        f"<domain type='{virt_type}'><name>{name}</name>"
        "<memory unit='KiB'>65536</memory><currentMemory unit='KiB'>65536</currentMemory>"
        "<vcpu placement='static'>1</vcpu><os><type arch='x86_64'>hvm</type><boot dev='hd'/></os>"
        "<features><acpi/></features><devices><serial type='pty'><target port='0'/></serial>"
        "<console type='pty'><target type='serial' port='0'/></console>"
        "<memballoon model='none'/></devices></domain>"
    )


def manifest(name: str, virt_type: str) -> str:
    return (
        f"apiVersion: kvmrec.io/v1alpha1\nkind: Domain\nmetadata:\n  name: {name}\n"
        f"spec:\n  type: {virt_type}\n  memory: 64Mi\n"
    )


def plain_converge(conn: Any, names: list[str], virt_type: str) -> float:
    started = time.perf_counter()
    for name in names:
        conn.defineXML(guest_xml(name, virt_type)).create()
    return time.perf_counter() - started


def plain_noop(conn: Any) -> float:
    started = time.perf_counter()
    for dom in conn.listAllDomains(0):
        dom.XMLDesc(0)
    return time.perf_counter() - started


def plain_heal(conn: Any, name: str) -> float:
    dom = conn.lookupByName(name)
    dom.destroy()
    started = time.perf_counter()
    dom.create()
    took = time.perf_counter() - started
    time.sleep(0.2)
    return took


def kvmrec_converge(tmp: Path, names: list[str], args: argparse.Namespace) -> tuple[float, Service]:
    """From N manifests and no state to N running guests: the seconds, and the service."""
    manifests = tmp / "manifests"
    manifests.mkdir()
    for name in names:
        (manifests / f"{name}.yaml").write_text(manifest(name, args.type))
    settings = Settings(
        manifests=manifests,
        connect=args.connect,
        state=tmp / "state.db",
        workers=args.workers,
        resync=3600.0,
    )
    service = Service(settings)
    started = time.perf_counter()
    service.start(watch=True)
    if not service.converge(timeout=600):
        raise SystemExit("kvmrec did not converge")
    return time.perf_counter() - started, service


def wait_idle(service: Service, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while service.queue.is_busy() or service.queue.pending_delayed():
        if time.monotonic() > deadline:
            raise TimeoutError("kvmrec did not settle")
        time.sleep(0.001)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def best(values: list[float]) -> float:
    return min(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--connect", default=os.environ.get("LIBVIRT_DEFAULT_URI", "test:///default")
    )
    parser.add_argument(
        "-n", type=int, default=None, help="guests (default 1000 on test:///, else 20)"
    )
    parser.add_argument("--type", default=os.environ.get("KVMREC_DOMAIN_TYPE", "kvm"))
    parser.add_argument("--workers", type=int, default=Settings.workers)
    parser.add_argument("--repeat", type=int, default=5, help="no-op passes to take the best of")
    parser.add_argument(
        "--converge-repeat", type=int, default=3, help="converges of each to take the best of"
    )
    parser.add_argument("--converge-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--trials", type=int, default=20, help="heal trials (real URIs)")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle CPU sampling")
    args = parser.parse_args()
    fake = args.connect.startswith("test:")
    n = args.n or (1000 if fake else 20)
    logging.basicConfig(level=logging.ERROR)
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

    conn = libvirt.open(args.connect)
    remove_guests(conn, PREFIX)
    names = [f"{PREFIX}{i:04d}" for i in range(n)]

    # -- the plain loop (the floor) and kvmrec, alternating; all but the last attempt in a
    # process of their own, so that the memory measured below is one service's --
    if args.converge_only:
        with tempfile.TemporaryDirectory(prefix="kvmrec-bench-") as tmp:
            plain = plain_converge(conn, names, args.type)
            remove_guests(conn, PREFIX)
            seconds, service = kvmrec_converge(Path(tmp), names, args)
            service.stop()
        remove_guests(conn, PREFIX)
        print(json.dumps({"plain_s": plain, "kvmrec_s": seconds}))
        return 0
    plain_convs: list[float] = []
    kvmrec_convs: list[float] = []
    for _ in range(args.converge_repeat - 1):
        child = [sys.executable, __file__, "--converge-only", "--connect", args.connect]
        child += ["-n", str(n), "--type", args.type, "--workers", str(args.workers)]
        times = json.loads(subprocess.run(child, check=True, capture_output=True).stdout)
        plain_convs.append(times["plain_s"])
        kvmrec_convs.append(times["kvmrec_s"])
    with tempfile.TemporaryDirectory(prefix="kvmrec-bench-") as tmp:
        plain_convs.append(plain_converge(conn, names, args.type))
        plain_noops = [plain_noop(conn) for _ in range(args.repeat)]
        # The floor of a heal: the same destroy, then the start a plain loop would make at
        # once.
        plain_heals = [] if fake else [plain_heal(conn, names[i % n]) for i in range(args.trials)]
        remove_guests(conn, PREFIX)
        seconds, service = kvmrec_converge(Path(tmp), names, args)
        kvmrec_convs.append(seconds)
        running = sum(
            1
            for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
            if d.name().startswith(PREFIX)
        )

        # The first resync after a converge reconciles each guest once to take its
        # fingerprint; the passes after it are the steady state being measured.
        service.resync.resync()
        wait_idle(service)
        kvmrec_noops = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            service.resync.resync()
            wait_idle(service)
            kvmrec_noops.append(time.perf_counter() - t0)

        # The hourly full pass reconciles every guest regardless of fingerprints.
        t0 = time.perf_counter()
        for key in service.store.keys():  # noqa: SIM118 (the Store method, not a dict)
            service.queue.add(key)
        wait_idle(service)
        kvmrec_full = time.perf_counter() - t0

        heal: dict[str, Any] | None = None
        if not fake:
            # Timed from the moment virDomainDestroy returns (the guest is gone) until
            # libvirt reports it running again; the destroy call itself is shown apart.
            times, destroys = [], []
            for i in range(args.trials):
                dom = conn.lookupByName(names[i % n])
                t0 = time.perf_counter()
                dom.destroy()
                t1 = time.perf_counter()
                while dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING:
                    time.sleep(0.002)
                times.append(time.perf_counter() - t1)
                destroys.append(t1 - t0)
                time.sleep(0.2)
            heal = {
                "trials": len(times),
                "median_s": round(statistics.median(times), 3),
                "plain_start_median_s": round(statistics.median(plain_heals), 3),
                "worst_s": round(max(times), 3),
                "destroy_call_median_s": round(statistics.median(destroys), 3),
                "resync_period_s": service.settings.resync,
            }

        cpu0, t0 = cpu_seconds(), time.perf_counter()
        time.sleep(args.idle)
        idle_cpu = (cpu_seconds() - cpu0) / (time.perf_counter() - t0)
        memory = rss_mb()
        service.stop()
    remove_guests(conn, PREFIX)

    floor_noop, ours_noop = best(plain_noops), best(kvmrec_noops)
    result = {
        "uri": args.connect,
        "n": n,
        "type": args.type,
        "workers": args.workers,
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, "
        f"python {platform.python_version()}, libvirt {libvirt.getVersion()}",
        "converge": {
            "plain_s": round(best(plain_convs), 3),
            "kvmrec_s": round(best(kvmrec_convs), 3),
            "ratio": round(best(kvmrec_convs) / best(plain_convs), 2),
            "plain_runs_s": [round(t, 3) for t in plain_convs],
            "kvmrec_runs_s": [round(t, 3) for t in kvmrec_convs],
            "running": running,
        },
        "noop_resync": {
            "plain_s": round(floor_noop, 4),
            "kvmrec_s": round(ours_noop, 4),
            "ratio": round(ours_noop / floor_noop, 2),
            "full_pass_s": round(kvmrec_full, 3),
        },
        "heal": heal,
        "rss_mb": round(memory, 1),
        "idle_cpu_percent": round(100 * idle_cpu, 2),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
