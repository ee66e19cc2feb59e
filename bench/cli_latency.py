"""Read-only commands as whole processes: ``kvmrec status``, ``events``, ``describe``,
``history`` on a state file of N objects, beside plain baselines in the same run.

The state is made the way bench/converge.py makes it: N Domain manifests converged by the
service on ``test:///default`` (real statuses, conditions and events), unless ``--state``
names an existing file. Each command is started ``--runs`` times as a new process (as an
operator or a script starts it) and the best and the median wall times are printed as one
JSON object, beside the floors:

- python: ``python -c pass``, the interpreter's own start;
- sqlite: a Python process that reads every object and status row of the same file with
  the standard library's sqlite3 and nothing else;
- virsh: ``virsh -c test:///default list``, the libvirt client's own answer (if installed).

With ``--etcd HOST:PORT`` the fleet's read-only commands are timed too: ``hosts`` and
``status --store etcd://...`` on a prefix of the bench's own (deleted afterwards) holding
the same N Domains placed on three hosts registered under live leases.

The commands run with bytecode caching on (as an installed package has it), whatever
``PYTHONDONTWRITEBYTECODE`` says; the first run of each is a warm-up and is not counted.

Usage:
  python bench/cli_latency.py [-n 1000] [--runs 20] [--state FILE] [--etcd HOST:PORT]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kvmrec import store as stores
from kvmrec.api.kinds import Manifest, ObjectKey
from kvmrec.service import Service
from kvmrec.settings import Settings
from kvmrec.store.etcd.gateway import Gateway, parse_endpoints
from kvmrec.store.etcd.hosts import EtcdHosts
from kvmrec.store.etcd.leases import HostLease
from kvmrec.store.etcd.placements import EtcdPlacements
from kvmrec.store.fleet_records import Capacity, HostRecord

PREFIX = "kl-"

SQLITE_READ = (
    "import sqlite3, sys\n"
    "db = sqlite3.connect(sys.argv[1])\n"
    "objects = db.execute('SELECT kind, name, spec FROM objects ORDER BY kind, name').fetchall()\n"
    "statuses = db.execute('SELECT kind, name, body FROM statuses').fetchall()\n"
    "print(len(objects), len(statuses))\n"
)


def manifest(name: str) -> str:
    return (
        f"apiVersion: kvmrec.io/v1alpha1\nkind: Domain\nmetadata:\n  name: {name}\n"
        "spec:\n  type: kvm\n  memory: 64Mi\n"
    )


def make_state(directory: Path, n: int) -> Path:
    """N Domains converged on test:///default, the service stopped: a state file."""
    manifests = directory / "manifests"
    manifests.mkdir()
    for i in range(n):
        name = f"{PREFIX}{i:04d}"
        (manifests / f"{name}.yaml").write_text(manifest(name))
    settings = Settings(
        manifests=manifests, connect="test:///default", state=directory / "state.db"
    )
    service = Service(settings)
    service.start(watch=False)
    try:
        if not service.converge(timeout=600):
            raise SystemExit("kvmrec did not converge")
    finally:
        service.stop()
    return settings.state


@contextmanager
def fleet(endpoints: str, n: int) -> Iterator[str]:
    """An etcd store of N Domains placed on three live hosts; yields its URL."""
    prefix = f"/kvmrec-bench-{uuid.uuid4().hex[:8]}"
    gateway = Gateway(parse_endpoints(endpoints))
    leases: list[HostLease] = []
    now = datetime.now(UTC)
    try:
        url = f"etcd://{endpoints}{prefix}"
        store = stores.open(url)
        names = [f"{PREFIX}{i:04d}" for i in range(n)]
        spec = {"type": "kvm", "memory": "64Mi", "vcpus": 1}
        store.apply_many([Manifest("Domain", name, spec, f"{name}.yaml", 0) for name in names], now)
        store.close()
        hosts = [f"bench-{i}" for i in range(3)]
        for host in hosts:
            lease = HostLease(gateway, EtcdHosts(gateway, prefix).live_key(host))
            lease.acquire()
            leases.append(lease)
            record = HostRecord(
                host, {"bench": "yes"}, Capacity(64 << 30, 32), "kvm", None, "bench", True, now
            )
            EtcdHosts(gateway, prefix, lease).register(record, now)
        placements = EtcdPlacements(gateway, prefix)
        for i, name in enumerate(names):
            placements.place(ObjectKey("Domain", name), hosts[i % 3], "bench", None, now)
        yield url
    finally:
        for lease in leases:
            lease.close()
        gateway.delete(f"{prefix}/".encode(), prefix=True)
        gateway.close()


def kvmrec_command() -> list[str]:
    """The ``kvmrec`` script beside this interpreter, as an operator runs it; else -m."""
    script = Path(sys.executable).with_name("kvmrec")
    return [str(script)] if script.exists() else [sys.executable, "-m", "kvmrec"]


def timed(argv: list[str], runs: int, env: dict[str, str]) -> dict[str, float]:
    times = []
    for attempt in range(runs + 1):
        started = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, check=False)
        elapsed = time.perf_counter() - started
        if done.returncode not in (0, 2):
            raise SystemExit(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.decode()}")
        if attempt:  # the first run writes the bytecode caches
            times.append(elapsed)
    return {"best_s": round(min(times), 4), "median_s": round(statistics.median(times), 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="objects in the state (default 1000)")
    parser.add_argument("--runs", type=int, default=20, help="processes per command")
    parser.add_argument("--state", type=Path, help="an existing state file to read instead")
    parser.add_argument("--etcd", metavar="HOST:PORT", help="time the fleet's commands too")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    with tempfile.TemporaryDirectory(prefix="kvmrec-cli-bench-") as tmp:
        state = args.state or make_state(Path(tmp), args.n)
        kvmrec = kvmrec_command()
        first = f"domain/{PREFIX}0000" if args.state is None else None
        commands: dict[str, list[str]] = {
            "status": ["status"],
            "status_json": ["status", "-o", "json"],
            "events": ["events"],
        }
        if first is not None:
            commands["describe"] = ["describe", first]
            commands["history"] = ["history", first]
        floors: dict[str, list[str]] = {
            "python": [sys.executable, "-c", "pass"],
            "sqlite": [sys.executable, "-c", SQLITE_READ, str(state)],
        }
        virsh = shutil.which("virsh")
        if virsh:
            floors["virsh"] = [virsh, "-c", "test:///default", "list"]
        result: dict[str, Any] = {
            "n": args.n if args.state is None else None,
            "state": str(args.state) if args.state else "test:///default, converged",
            "runs": args.runs,
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, "
            f"python {platform.python_version()}",
            "floors": {name: timed(argv, args.runs, env) for name, argv in floors.items()},
            "kvmrec": {
                name: timed([*kvmrec, *argv, "--state", str(state)], args.runs, env)
                for name, argv in commands.items()
            },
        }
        if args.etcd:
            with fleet(args.etcd, args.n) as url:
                result["fleet"] = {
                    name: timed([*kvmrec, *argv, "--store", url], args.runs, env)
                    for name, argv in {
                        "hosts": ["hosts"],
                        "hosts_json": ["hosts", "-o", "json"],
                        "status": ["status"],
                        "status_json": ["status", "-o", "json"],
                    }.items()
                }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
