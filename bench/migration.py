"""Live migration of the test guest between lab hosts: kvmrec beside virsh, in one run.

The test guest (scripts/test-guest.sh: a real kernel and qemu-ga, TCG, 192 MiB) with its
data disk on the lab's shared storage is applied to a fleet of two kvmrec hosts (lab1,
lab2, run as the lab tests run them) and moved N times back and forth with
``kvmrec migrate NAME --to HOST --wait``: the whole command's wall time, and libvirt's
completed job statistics on the destination (time_elapsed, downtime, data processed).
kvmrec reads those statistics itself when a migration ends (which consumes them), and
keeps them in the migration's record; they are taken from there when libvirt has none
left. Then the kvmrec hosts are stopped (the guest keeps running) and the same guest is
moved N times back and forth by hand with ``virsh migrate --live --p2p --persistent
--undefinesource --unsafe`` and ``--migrateuri tcp://127.0.0.1`` (kvmrec's flags: libvirt
cannot tell the lab's shared directory from a local one), with the same
statistics read on the destination. Prints the JSON of every migration and the medians.
The guest (``bench-XXXX-live``), its data disk and the etcd prefix are removed at the end.

Usage: python bench/migration.py [-n 5]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import libvirt
import libvirt_qemu
from lab_kvmrec import Fleet, Lab, domain_manifest, load_average, load_lab, wait_until

GUEST_IMAGE = Path("/var/cache/kvmrec/test-guest/current")
HOSTS = ("lab1", "lab2")


def agent_answers(uri: str, name: str) -> bool:
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        return False
    try:
        libvirt_qemu.qemuAgentCommand(conn.lookupByName(name), '{"execute":"guest-ping"}', 2, 0)
        return True
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()


def completed_stats(uri: str, name: str) -> dict[str, int] | None:
    """The destination's completed job statistics, kept for a second reader."""
    conn = libvirt.open(uri)
    try:
        flags = libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED
        flags |= libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED
        stats = conn.lookupByName(name).jobStats(flags)
    finally:
        conn.close()
    if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
        return None
    return {
        "time_elapsed_ms": int(stats.get("time_elapsed", 0)),
        "downtime_ms": int(stats.get("downtime", 0)),
        "data_processed": int(stats.get("data_processed", 0)),
    }


def on_host(lab: Lab, name: str) -> str | None:
    for host in HOSTS:
        conn = libvirt.open(lab.uris[host])
        try:
            if conn.lookupByName(name).isActive():
                return host
        except libvirt.libvirtError:
            pass
        finally:
            conn.close()
    return None


def by_kvmrec(fleet: Fleet, name: str, n: int) -> list[dict[str, Any]]:
    runs = []
    for _ in range(n):
        source = wait_until("the guest placed", lambda: on_host(fleet.lab, name), 60)
        target = next(h for h in HOSTS if h != source)
        started = time.monotonic()
        done = fleet.cli("migrate", name, "--to", target, "--wait", timeout=600)
        wall = time.monotonic() - started
        if done.returncode != 0:
            raise RuntimeError(f"kvmrec migrate: {done.stdout}{done.stderr}")
        stats = completed_stats(fleet.lab.uris[target], name)
        origin = "libvirt"
        if stats is None:
            record = fleet.record("migrations", name) or {}
            progress = record.get("progress", {})
            stats = {k: int(progress.get(k, 0)) for k in ("time_elapsed_ms", "downtime_ms")}
            stats["data_processed"] = int(progress.get("data_processed", 0))
            origin = "kvmrec's record of libvirt's"
        placed = (fleet.record("placements", name) or {}).get("host")
        runs.append(
            {"from": source, "to": target, "wall_s": round(wall, 3), **stats, "stats": origin}
        )
        if placed != target:
            raise RuntimeError(f"the placement is {placed}, not {target}")
    return runs


def by_virsh(lab: Lab, name: str, n: int) -> list[dict[str, Any]]:
    runs = []
    for _ in range(n):
        source = wait_until("the guest running", lambda: on_host(lab, name), 60)
        target = next(h for h in HOSTS if h != source)
        command = ["virsh", "-q", "-c", lab.uris[source], "migrate", "--live", "--p2p"]
        command += ["--persistent", "--undefinesource", "--unsafe", name, lab.uris[target]]
        command += ["--migrateuri", "tcp://127.0.0.1"]
        started = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        wall = time.monotonic() - started
        if done.returncode != 0:
            raise RuntimeError(f"virsh migrate: {done.stderr}")
        stats = completed_stats(lab.uris[target], name) or {}
        runs.append({"from": source, "to": target, "wall_s": round(wall, 3), **stats})
    return runs


def medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("wall_s", "time_elapsed_ms", "downtime_ms", "data_processed")
    return {k: statistics.median(r[k] for r in runs) for k in keys if all(k in r for r in runs)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5, help="migrations each way (default 5)")
    parser.add_argument("--etcd", default=os.environ.get("KVMREC_ETCD", "http://127.0.0.1:2379"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    lab = load_lab()
    image = GUEST_IMAGE.resolve()
    tag = uuid.uuid4().hex[:4]
    name = f"bench-{tag}-live"
    shared = lab.shared / f"bench-{tag}"
    shared.mkdir()
    result: dict[str, Any] = {"guest": name, "n": args.n, "load_before": load_average()}
    with tempfile.TemporaryDirectory(prefix="kvmrec-bench-") as tmp:
        fleet = Fleet(lab, args.etcd.split("://", 1)[-1], f"/kvmrec-bench-{tag}", Path(tmp), name)
        try:
            data = shared / "data.qcow2"
            subprocess.run(
                ["cp", "--sparse=always", str(image / "data.qcow2"), str(data)], check=True
            )
            options = ["--migration-address", "127.0.0.1", "--shared-storage", str(lab.shared)]
            options += ["--disk-root", str(lab.shared), "--disk-root", str(image)]
            for host in HOSTS:
                fleet.start(host, *options)
            spec = {
                "memory": "192Mi",
                "guestAgent": True,
                "os": {
                    "kernel": str(image / "vmlinuz"),
                    "initrd": str(image / "initrd.img"),
                    "cmdline": f"console=ttyS0 kvmrec.hostname={name}",
                },
                "disks": [{"path": str(data), "format": "qcow2"}],
                "console": "serial",
                "terminationGracePeriodSeconds": 0,
            }
            fleet.apply(name, domain_manifest(name, "qemu", **spec))
            host = wait_until("the guest running", lambda: on_host(lab, name), 180)
            wait_until("the agent", lambda: agent_answers(lab.uris[host], name), 300, 0.5)
            result["kvmrec"] = by_kvmrec(fleet, name, args.n)
            fleet.stop()  # the guest runs on, unmanaged
            result["virsh"] = by_virsh(lab, name, args.n)
            last = on_host(lab, name)
            result["agent_after"] = bool(last and agent_answers(lab.uris[last], name))
        finally:
            fleet.close()
            shutil.rmtree(shared, ignore_errors=True)
    result["load_after"] = load_average()
    result["median"] = {"kvmrec": medians(result["kvmrec"]), "virsh": medians(result["virsh"])}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
