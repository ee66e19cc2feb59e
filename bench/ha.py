"""HA restart after a power loss in the lab: from the kill to the guest running elsewhere.

Each trial, on an etcd prefix of its own: kvmrec on lab1 alone (as the lab test runs it,
with the lab's shared storage and a fencing window of 3 s), an HA guest (64 MiB, no OS,
a 16 MiB qcow2 on the shared storage) applied and running there, then lab2 and lab3
joining; then lab1's kvmrec and the guest's QEMU killed at once (SIGKILL) and the time
taken until libvirt on another host has the guest active and its vCPUs running. Beside
it, in the same run: a plain define and start of the same guest's definition on lab2,
the floor of any restart. Prints the JSON of every trial, the median and the spread.
The guests (``bench-XXXX-...``), their disks and the etcd prefixes are removed.

Usage: python bench/ha.py [--trials 5]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import libvirt
from guests import remove_guests
from lab_kvmrec import Fleet, Lab, domain_manifest, domain_state, load_average, load_lab, wait_until

CONFIG = {"fencing_window": 3.0}


def trial(lab: Lab, etcd: str, tag: str, i: int) -> dict[str, Any]:
    name = f"bench-{tag}-ha{i}"
    shared = lab.shared / name
    shared.mkdir()
    with tempfile.TemporaryDirectory(prefix="kvmrec-bench-") as tmp:
        root = Path(tmp)
        config = root / "kvmrec.yaml"
        roots = [str(lab.shared), "/var/lib/libvirt/images"]
        config.write_text(json.dumps({**CONFIG, "shared_storage": roots, "disk_roots": roots}))
        fleet = Fleet(lab, etcd, f"/kvmrec-bench-{tag}-{i}", root, name)
        try:
            disk = shared / "ha.qcow2"
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True
            )
            fleet.start("lab1", "--config", str(config))
            spec = {"disks": [{"path": str(disk)}], "highAvailability": {"restart": True}}
            fleet.apply(name, domain_manifest(name, lab.domain_type, **spec))
            wait_until(
                "the guest on lab1",
                lambda: domain_state(lab, "lab1", name) == libvirt.VIR_DOMAIN_RUNNING,
                90,
            )
            fleet.start("lab2", "--config", str(config))
            fleet.start("lab3", "--config", str(config))
            qemu = lab.qemu_pid("lab1", name)

            killed = time.monotonic()
            fleet.procs["lab1"].send_signal(signal.SIGKILL)
            os.kill(qemu, signal.SIGKILL)
            seen: dict[str, float] = {}

            def elsewhere() -> str | None:
                for host in ("lab2", "lab3"):
                    state = domain_state(lab, host, name)
                    if state is not None and state != libvirt.VIR_DOMAIN_SHUTOFF:
                        seen.setdefault("active_s", time.monotonic() - killed)
                    if state == libvirt.VIR_DOMAIN_RUNNING:
                        return host
                return None

            host = wait_until("the guest running elsewhere", elsewhere, 120, 0.05)
            took = time.monotonic() - killed
            placed = (fleet.record("placements", name) or {}).get("host")
            return {
                "to": host,
                "running_s": round(took, 2),
                "active_s": round(seen.get("active_s", took), 2),
                "placement": placed,
            }
        finally:
            fleet.close()
            shutil.rmtree(shared, ignore_errors=True)


def plain_start(lab: Lab, tag: str, trials: int) -> list[float]:
    """Define and start the same kind of guest on lab2 by hand, until its vCPUs run."""
    disk = lab.shared / f"bench-{tag}-plain.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    name = f"bench-{tag}-plain"
    xml = (
        f"<domain type='{lab.domain_type}'><name>{name}</name>"
        "<memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>"
        "<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file='{disk}'/><target dev='vda' bus='virtio'/></disk>"
        "<serial type='pty'/><console type='pty'/><memballoon model='none'/></devices></domain>"
    )
    conn = libvirt.open(lab.uris["lab2"])
    times = []
    try:
        for _ in range(trials):
            started = time.monotonic()
            dom: Any = conn.defineXML(xml)
            dom.create()

            def runs(dom: Any = dom) -> bool:
                return bool(dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING)

            wait_until("running", runs, 60)
            times.append(round(time.monotonic() - started, 2))
            remove_guests(conn, name)
    finally:
        remove_guests(conn, name)
        conn.close()
        disk.unlink(missing_ok=True)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--etcd", default=os.environ.get("KVMREC_ETCD", "http://127.0.0.1:2379"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    lab = load_lab()
    etcd = args.etcd.split("://", 1)[-1]
    tag = uuid.uuid4().hex[:4]
    result: dict[str, Any] = {"type": lab.domain_type, "load_before": load_average()}
    result["trials"] = [trial(lab, etcd, tag, i) for i in range(args.trials)]
    result["plain_start_s"] = plain_start(lab, tag, args.trials)
    result["load_after"] = load_average()
    running = [t["running_s"] for t in result["trials"]]
    result["running_s"] = {
        "median": statistics.median(running),
        "min": min(running),
        "max": max(running),
    }
    result["plain_start_median_s"] = statistics.median(result["plain_start_s"])
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
