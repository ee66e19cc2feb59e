"""A fleet of the lab's real hosts (scripts/lab.sh): G guests per host, apply to all running.

Each lab host gets ``kvmrec run --store etcd://... --host labN --connect URI`` as a process
of its own; ``kvmrec apply`` writes H x G tiny diskless KVM guests (64 MiB, unpinned: the
scheduler spreads them), timed until every one is Ready in etcd and running in its host's
libvirt. Beside it, in the same run: the same guests converged by one single-host kvmrec
with sqlite on the first lab host, and a plain loop defining and starting them one by one
there. Guests are named ``bench-XXXX-NN`` and removed at the end, as is the etcd prefix.

Usage: python bench/fleet_lab.py [--per-host 10] [--type kvm]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import libvirt
from converge import guest_xml, manifest
from guests import remove_guests

from kvmrec.service import Service
from kvmrec.settings import Settings
from kvmrec.store.etcd.gateway import Gateway, parse_endpoints
from kvmrec.store.etcd.store import EtcdStore

LAB_ENV = Path("/var/lib/kvmrec-lab/env")


def lab_hosts() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in LAB_ENV.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            env[name.strip()] = value.strip().strip("'\"")
    return {h: env[f"KVMREC_LAB_{h.upper()}_URI"] for h in env["KVMREC_LAB_HOSTS"].split()}


def running(uris: dict[str, str], prefix: str) -> dict[str, int]:
    counts = {}
    for host, uri in uris.items():
        conn = libvirt.open(uri)
        active = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        counts[host] = sum(1 for d in active if d.name().startswith(prefix))
        conn.close()
    return counts


def ready(store: EtcdStore) -> int:
    return sum(1 for k, s in store.statuses().items() if k.kind == "Domain" and s.is_true("Ready"))


def fleet(uris: dict[str, str], names: list[str], virt_type: str, etcd: str) -> dict[str, Any]:
    prefix = f"/kvmrec-bench-{uuid.uuid4().hex[:8]}"
    url = f"etcd://{etcd}{prefix}"
    gateway = Gateway(parse_endpoints(etcd))
    view = EtcdStore(etcd, prefix=prefix, read_only=True)
    procs: list[subprocess.Popen[bytes]] = []
    guest_prefix = names[0].rsplit("-", 1)[0]
    try:
        with tempfile.TemporaryDirectory(prefix="kvmrec-lab-bench-") as tmp:
            manifests = Path(tmp) / "manifests"
            manifests.mkdir()
            for name in names:
                (manifests / f"{name}.yaml").write_text(manifest(name, virt_type))
            for host, uri in uris.items():
                command = [sys.executable, "-m", "kvmrec", "run", "--store", url]
                command += ["--host", host, "--connect", uri, "--resync", "3600"]
                procs.append(subprocess.Popen(command, stderr=subprocess.DEVNULL))
            deadline = time.monotonic() + 120
            while len(gateway.range(f"{prefix}/hosts/".encode(), prefix=True).kvs) < len(uris):
                if time.monotonic() > deadline:
                    raise TimeoutError("the lab hosts did not register")
                time.sleep(0.2)
            started = time.monotonic()
            subprocess.run(
                [sys.executable, "-m", "kvmrec", "apply", "-f", str(manifests), "--store", url],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            applied = time.monotonic() - started
            all_running: float | None = None
            while True:
                if all_running is None and sum(running(uris, guest_prefix).values()) >= len(names):
                    all_running = time.monotonic() - started
                if ready(view) >= len(names):
                    break
                if time.monotonic() - started > 600:
                    raise TimeoutError("the lab fleet did not converge")
                time.sleep(0.25)
            all_ready = time.monotonic() - started
            spread = Counter(
                json.loads(kv.value).get("host")
                for kv in gateway.range(f"{prefix}/placements/".encode(), prefix=True).kvs
            )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        for uri in uris.values():
            conn = libvirt.open(uri)
            remove_guests(conn, guest_prefix)
            conn.close()
        gateway.delete(f"{prefix}/".encode(), prefix=True)
        gateway.close()
        view.close()
    return {
        "apply_s": round(applied, 2),
        "all_running_libvirt_s": round(all_running or all_ready, 2),
        "all_ready_etcd_s": round(all_ready, 2),
        "placed": dict(sorted(spread.items())),
    }


def single_host(uri: str, names: list[str], virt_type: str) -> float:
    with tempfile.TemporaryDirectory(prefix="kvmrec-lab-bench-") as tmp:
        manifests = Path(tmp) / "manifests"
        manifests.mkdir()
        for name in names:
            (manifests / f"{name}.yaml").write_text(manifest(name, virt_type))
        service = Service(
            Settings(manifests=manifests, connect=uri, state=Path(tmp) / "s.db", resync=3600.0)
        )
        started = time.perf_counter()
        service.start(watch=True)
        try:
            if not service.converge(timeout=600):
                raise SystemExit("single-host kvmrec did not converge")
            return time.perf_counter() - started
        finally:
            service.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--etcd", default=os.environ.get("KVMREC_ETCD", "http://127.0.0.1:2379"))
    parser.add_argument("--per-host", type=int, default=10)
    parser.add_argument("--type", default="kvm")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    uris = lab_hosts()
    first = next(iter(uris.values()))
    tag = uuid.uuid4().hex[:4]
    n = args.per_host * len(uris)
    names = [f"bench-{tag}-{i:02d}" for i in range(n)]
    etcd = args.etcd.split("://", 1)[-1]

    result: dict[str, Any] = {"hosts": list(uris), "guests": n, "type": args.type}
    result["fleet"] = fleet(uris, names, args.type, etcd)

    conn = libvirt.open(first)
    try:
        started = time.perf_counter()
        for name in names:
            conn.defineXML(guest_xml(name, args.type)).create()
        result["plain_loop_one_host_s"] = round(time.perf_counter() - started, 2)
    finally:
        remove_guests(conn, f"bench-{tag}-")
    try:
        result["single_host_sqlite_s"] = round(single_host(first, names, args.type), 2)
    finally:
        remove_guests(conn, f"bench-{tag}-")
        conn.close()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
