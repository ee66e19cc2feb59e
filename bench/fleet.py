"""A simulated fleet on one etcd, beside one single-host kvmrec and a plain libvirt loop.

H hosts (default 50) run as ``Service`` objects with an etcd store, each on a libvirt test
driver of its own (bench/fleet_hosts.py), in a few processes plus one process holding a
single host (the one killed for the dead-host figure). ``kvmrec apply`` writes N Domains per
host (default 40, unpinned: the elected scheduler places them) and this prints one JSON
object with:

- apply_to_running_s: from ``kvmrec apply`` of the manifests until every Domain is Ready in
  etcd (placed_s: until every Domain is placed); beside it, the same Domains converged by
  one single-host kvmrec with sqlite on test:///default, and a plain define+start loop.
- requests_per_reconcile during that converge, and the writes of a no-op resync pass and of
  the hourly full pass across the fleet (target: none), by request kind.
- idle: etcd requests per second with nothing changing (target: lease renewals only,
  hosts / 5 s), the etcd revision's growth, CPU and resident memory per host process.
- dead_host: one host's process killed with SIGKILL, until ``hosts`` says NotReady
  (target: 20 s), and until its Domains' status says HostNotReady.

The keys live under a fresh prefix of the stack's etcd, deleted at the end.

Usage: python bench/fleet.py [--hosts 50] [--per-host 40] [--groups 5]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO, Any

import libvirt
from converge import manifest, plain_converge
from guests import remove_guests

from kvmrec.service import Service
from kvmrec.settings import Settings
from kvmrec.store.etcd.gateway import Gateway, parse_endpoints
from kvmrec.store.etcd.hosts import EtcdHosts
from kvmrec.store.etcd.store import EtcdStore

HERE = Path(__file__).parent
NODE_XML = (
    "<node><cpu><mhz>2000</mhz><model>x86_64</model><active>{cpus}</active>"
    "<total>{cpus}</total><nodes>1</nodes><sockets>1</sockets><cores>{cpus}</cores>"
    "<threads>1</threads></cpu><memory>{kib}</memory></node>"
)
IDLE_PERIOD = 5.0  # the host lease's renewal period


class Hosts:
    """One process of simulated hosts, driven over its stdin/stdout."""

    def __init__(
        self, store: str, drivers: Path, names: list[str], workers: int, ovsdb: str
    ) -> None:
        self.names = names
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "fleet_hosts.py"),
                "--store",
                store,
                "--drivers",
                str(drivers),
                "--workers",
                str(workers),
                "--ovsdb",
                ovsdb,
                *names,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.started: dict[str, Any] | None = None

    def _stdout(self) -> IO[str]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    def wait_started(self) -> None:
        self.started = json.loads(self._stdout().readline())

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def answer(self) -> dict[str, Any]:
        line = self._stdout().readline()
        if not line:
            raise RuntimeError(f"host process {self.names[0]}.. ended")
        result: dict[str, Any] = json.loads(line)
        return result

    def ask(self, command: str) -> dict[str, Any]:
        self.send(command)
        return self.answer()

    def quit(self) -> None:
        """Ask the process to stop its hosts (``stop`` waits for it)."""
        try:
            self.send("quit")
        except OSError:
            self.proc.kill()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.answer()
                self.proc.wait(timeout=60)
            except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.proc.wait()


def ask_all(groups: list[Hosts], command: str) -> list[dict[str, Any]]:
    for group in groups:
        group.send(command)  # every process works at once
    return [group.answer() for group in groups]


def totals(stats: list[dict[str, Any]]) -> dict[str, int]:
    summed: dict[str, int] = {}
    for one in stats:
        for name, value in one["counts"].items():
            summed[name] = summed.get(name, 0) + value
    return dict(sorted(summed.items()))


def writes(counts: dict[str, int], scope: str = "all") -> int:
    return sum(counts.get(f"{scope}.{op}", 0) for op in ("txn_write", "put", "deleterange"))


def requests(counts: dict[str, int], scope: str = "all") -> int:
    return sum(v for k, v in counts.items() if k.startswith(f"{scope}."))


def ready_domains(store: EtcdStore) -> int:
    return sum(
        1
        for key, status in store.statuses().items()
        if key.kind == "Domain" and status.is_true("Ready")
    )


def host_not_ready(store: EtcdStore, names: set[str]) -> int:
    count = 0
    for key, _host, status in store.host_statuses():
        ready = status.condition("Ready")
        if key.name in names and ready is not None and ready.reason == "HostNotReady":
            count += 1
    return count


def etcd_revision(gateway: Gateway) -> int:
    """etcd's revision (every committed write moves it), from the header of an empty read."""
    return gateway.range(b"\0", count_only=True).revision


def placements(gateway: Gateway, prefix: str) -> int:
    return gateway.range(f"{prefix}/placements/".encode(), prefix=True, count_only=True).count


def is_ready(hosts: EtcdHosts, name: str) -> bool:
    host = hosts.host(name)
    return host is not None and host.ready


def plain_and_single(n: int, virt_type: str) -> dict[str, Any]:
    """The floor and the single-host figure, on test:///default in this process."""
    conn = libvirt.open("test:///default")
    prefix = "kf-"
    remove_guests(conn, prefix)
    names = [f"{prefix}{i:04d}" for i in range(n)]
    plain = plain_converge(conn, names, virt_type)
    remove_guests(conn, prefix)
    with tempfile.TemporaryDirectory(prefix="kvmrec-bench-") as tmp:
        manifests = Path(tmp) / "manifests"
        manifests.mkdir()
        for name in names:
            (manifests / f"{name}.yaml").write_text(manifest(name, virt_type))
        service = Service(
            Settings(
                manifests=manifests,
                connect="test:///default",
                state=Path(tmp) / "state.db",
                resync=3600.0,
            )
        )
        started = time.perf_counter()
        service.start(watch=True)
        if not service.converge(timeout=900):
            raise SystemExit("single-host kvmrec did not converge")
        single = time.perf_counter() - started
        service.stop()
    remove_guests(conn, prefix)
    conn.close()
    return {"plain_loop_s": round(plain, 3), "single_host_sqlite_s": round(single, 3)}


def wait_for(check: Any, timeout: float, poll: float = 0.2) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not within {timeout}s")
        time.sleep(poll)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--etcd", default=os.environ.get("KVMREC_ETCD", "http://127.0.0.1:2379"))
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--per-host", type=int, default=40)
    parser.add_argument("--groups", type=int, default=5, help="processes for hosts but one")
    parser.add_argument("--workers", type=int, default=Settings.workers)
    parser.add_argument("--type", default="kvm")
    # The simulated hosts have no OVS of their own; the machine's is shared by other work,
    # whose every bridge event would reach all of them at once.
    parser.add_argument("--ovsdb", default="unix:/nonexistent/kvmrec-bench-ovsdb.sock")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle sampling")
    parser.add_argument("--skip-baselines", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    n = args.hosts * args.per_host

    result: dict[str, Any] = {
        "hosts": args.hosts,
        "domains": n,
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, "
        f"python {platform.python_version()}, libvirt {libvirt.getVersion()}",
        "driver": "test:///DIR/HOST.xml, a private test driver per host",
        "ovsdb": args.ovsdb,
    }
    if not args.skip_baselines:
        result["baselines"] = plain_and_single(n, args.type)

    endpoints = args.etcd.split("://", 1)[-1]
    prefix = f"/kvmrec-bench-{uuid.uuid4().hex[:8]}"
    url = f"etcd://{endpoints}{prefix}"
    gateway = Gateway(parse_endpoints(endpoints))
    view = EtcdStore(endpoints, prefix=prefix, read_only=True)
    hosts_view = EtcdHosts(gateway, prefix)
    groups: list[Hosts] = []
    try:
        with tempfile.TemporaryDirectory(prefix="kvmrec-fleet-") as tmp:
            drivers = Path(tmp) / "drivers"
            drivers.mkdir()
            names = [f"bench{i:02d}" for i in range(args.hosts)]
            for name in names:
                # Room for the Domains placed here and then some (64 MiB, 1 vCPU each):
                # twice their memory, and vCPUs for twice as many at the default 4.0
                # overcommit (16 CPUs alone took at most 64).
                cpus = max(16, -(-args.per_host // 2))
                xml = NODE_XML.format(cpus=cpus, kib=2 * args.per_host * 65536)
                (drivers / f"{name}.xml").write_text(xml)
            manifests = Path(tmp) / "manifests"
            manifests.mkdir()
            for i in range(n):
                (manifests / f"fd-{i:04d}.yaml").write_text(manifest(f"fd-{i:04d}", args.type))

            # The lone host is started last, so it is not the scheduler when it dies.
            lone, rest = names[-1], names[:-1]
            size = -(-len(rest) // args.groups)
            for start in range(0, len(rest), size):
                groups.append(
                    Hosts(url, drivers, rest[start : start + size], args.workers, args.ovsdb)
                )
            t0 = time.monotonic()
            for group in groups:
                group.wait_started()
            groups.append(Hosts(url, drivers, [lone], args.workers, args.ovsdb))
            groups[-1].wait_started()
            wait_for(lambda: sum(h.ready for h in hosts_view.hosts()) == args.hosts, 120)
            result["fleet_start_s"] = round(time.monotonic() - t0, 2)
            ask_all(groups, "reset")

            rev0 = etcd_revision(gateway)
            started = time.monotonic()
            subprocess.run(
                [sys.executable, "-m", "kvmrec", "apply", "-f", str(manifests), "--store", url],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            applied = time.monotonic() - started
            placed: float | None = None
            while True:
                if placed is None and placements(gateway, prefix) >= n:
                    placed = time.monotonic() - started
                if ready_domains(view) >= n:
                    break
                if time.monotonic() - started > 1800:
                    raise TimeoutError("the fleet did not converge")
                time.sleep(0.5)
            converge = time.monotonic() - started
            settle = max(a["took_s"] for a in ask_all(groups, "idle"))
            stats = ask_all(groups, "stats")
            counts = totals(stats)
            reconciles = counts.get("reconciles", 0)
            result["apply_to_running"] = {
                "apply_s": round(applied, 2),
                "placed_s": round(placed or converge, 2),
                "all_ready_s": round(converge, 2),
                "queues_idle_after_s": round(settle, 2),
                "etcd_revisions": etcd_revision(gateway) - rev0,
            }
            result["converge_requests"] = {
                "reconciles": reconciles,
                "dispatches": counts.get("dispatches", 0),  # one key or a batch
                "dispatches_without_requests": counts.get("dispatches_without_requests", 0),
                "objects_written": counts.get("objects_written", 0),
                "requests_in_reconciles": requests(counts, "reconcile"),
                "requests_per_reconcile": round(
                    requests(counts, "reconcile") / max(reconciles, 1), 2
                ),
                "write_txns_per_changed_object": round(
                    writes(counts, "reconcile") / max(counts.get("objects_written", 0), 1), 2
                ),
                "all_requests": requests(counts),
                "by_kind": counts,
            }

            # No-op passes: the first after a converge takes each guest's fingerprint.
            ask_all(groups, "resync")
            for command in ("resync", "full"):
                ask_all(groups, "reset")
                rev = etcd_revision(gateway)
                took = max(a["took_s"] for a in ask_all(groups, command))
                counts = totals(ask_all(groups, "stats"))
                result[f"{command}_pass"] = {
                    "took_s": took,
                    "reconciles": counts.get("reconciles", 0),
                    "requests_in_reconciles": requests(counts, "reconcile"),
                    "writes_in_reconciles": writes(counts, "reconcile"),
                    "writes_all": writes(counts),
                    "etcd_revisions": etcd_revision(gateway) - rev,
                    "by_kind": counts,
                }

            ask_all(groups, "reset")
            before = ask_all(groups, "stats")
            rev = etcd_revision(gateway)
            t0 = time.monotonic()
            time.sleep(args.idle)
            after = ask_all(groups, "stats")
            elapsed = time.monotonic() - t0
            counts = totals(after)
            cpu = [b["cpu_s"] - a["cpu_s"] for a, b in zip(before, after, strict=True)]
            result["idle"] = {
                "seconds": round(elapsed, 1),
                "requests_per_s": round(requests(counts) / elapsed, 2),
                "writes_per_s": round(writes(counts) / elapsed, 2),
                "keepalives_per_s": round(counts.get("all.keepalive", 0) / elapsed, 2),
                "target_per_s": round(args.hosts / IDLE_PERIOD, 2),
                "etcd_revisions_per_s": round((etcd_revision(gateway) - rev) / elapsed, 2),
                "by_kind": counts,
                "recent_writes": [w for s in after for w in s["recent_writes"]][:10],
                "processes": [
                    {
                        "hosts": s["hosts"],
                        "rss_mb": s["rss_mb"],
                        "cpu_percent": round(100 * c / elapsed, 2),
                    }
                    for s, c in zip(after, cpu, strict=True)
                ],
            }

            dead = groups[-1]
            placed_there = {
                key.decode().rsplit("/", 1)[-1]
                for key, value in (
                    (kv.key, kv.value)
                    for kv in gateway.range(f"{prefix}/placements/".encode(), prefix=True).kvs
                )
                if json.loads(value).get("host") == lone
            }
            dead.proc.send_signal(signal.SIGKILL)
            dead.proc.wait()
            t0 = time.monotonic()
            not_ready = wait_for(lambda: not is_ready(hosts_view, lone), 60, 0.1)
            marked = wait_for(
                lambda: host_not_ready(view, placed_there) >= len(placed_there), 60, 0.25
            )
            result["dead_host"] = {
                "host": lone,
                "domains": len(placed_there),
                "not_ready_s": round(not_ready, 2),
                "objects_host_not_ready_s": round(time.monotonic() - t0, 2),
                "marking_after_not_ready_s": round(marked, 2),
                "target_s": 20,
            }
            groups.pop()
    finally:
        for group in groups:
            group.quit()  # every process stops its hosts at once
        for group in groups:
            group.stop()
        gateway.delete(f"{prefix}/".encode(), prefix=True)
        gateway.close()
        view.close()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
