"""HA restart in the lab: real kvmrec hosts, real QEMU, a guest never running twice.

Each lab host runs ``kvmrec run --store etcd://PROXY/PREFIX --host labN`` inside the host's
own mount namespace (so it sees the host's own /var/lib/libvirt, as on a hypervisor), and
reaches etcd through a proxy of its own that the test can cut. The guests are 64 MiB, no
OS; an HA guest's disk is a 16 MiB qcow2 on the lab's shared storage, which every host
declares in ``shared_storage``.

- power loss: a host's kvmrec and its guests' QEMUs killed at once; the HA guest runs on
  another host within 60 s, the non-HA guest stays placed on the dead host (HostNotReady);
- a host cut off from etcd destroys its HA guest before it starts elsewhere, and when it
  is back it does not start the relocated guest;
- a host that failed to fence (its kvmrec frozen): the relocated guest's start on the new
  host is refused by libvirt's lock manager (per-host images at one path: the lease, not
  QEMU's own image lock), and starts once the frozen host wakes and fences.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from kvmrec.api.objects import ObjectKey
from kvmrec.store.etcd.gateway import Gateway, parse_endpoints
from kvmrec.store.etcd.placements import EtcdPlacements
from support.lab import Lab, LabGuests, stack_etcd_url
from support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def make_qcow2(path: Path) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"], check=True)
    return path


class HaFleet:
    """kvmrec hosts of one test on the lab, one store prefix, a proxy per host."""

    def __init__(
        self, lab: Lab, root: Path, prefix: str, proxies: dict[str, TcpProxy], config: str
    ) -> None:
        self.lab, self.root, self.prefix, self.proxies = lab, root, prefix.rstrip("/"), proxies
        self.config = root / "kvmrec.yaml"
        self.config.write_text(config)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        etcd = stack_etcd_url().removeprefix("http://")
        self.url = f"etcd://{etcd}{self.prefix}"
        self.gateway = Gateway(parse_endpoints(etcd))
        self.placements = EtcdPlacements(self.gateway, self.prefix)

    def log(self, host: str) -> str:
        path = self.root / f"{host}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, host: str) -> None:
        libvirtd = (self.lab.host_dir(host) / "run" / "libvirt" / "libvirtd.pid").read_text()
        command = [
            "nsenter", "-t", libvirtd.strip(), "-m", "--",
            sys.executable, "-m", "kvmrec", "run",
            "--store", f"etcd://{self.proxies[host].address}{self.prefix}",
            "--host", host,
            "--connect", self.lab.uris[host],
            "--config", str(self.config),
            "--stop-grace-period", "0",
        ]  # fmt: skip
        with (self.root / f"{host}.log").open("ab") as log:
            self.procs[host] = subprocess.Popen(command, stdout=log, stderr=log, env=os.environ)
        wait_for(f"{host} to join", lambda: "joined the fleet" in self.log(host), 30)

    def kill(self, host: str, sig: int = signal.SIGKILL) -> None:
        self.procs[host].send_signal(sig)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.gateway.close()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kvmrec", *args, "--store", self.url],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def apply(self, path: Path) -> None:
        done = self.cli("apply", "-f", str(path))
        assert done.returncode == 0, done.stderr + done.stdout

    def host_of(self, name: str) -> str | None:
        placed = self.placements.placement(ObjectKey("Domain", name))
        return placed.placement.host if placed else None

    def statuses(self, name: str) -> list[dict[str, Any]]:
        done = self.cli("status", f"Domain/{name}", "-o", "json")
        return [o for o in json.loads(done.stdout)["objects"] if o["name"] == name]


def domain_manifest(name: str, domain_type: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kvmrec.io/v1alpha1",
        "kind": "Domain",
        "metadata": {"name": name},
        "spec": {"type": domain_type, "memory": "64Mi", **spec},
    }


def write_manifests(path: Path, *documents: dict[str, Any]) -> Path:
    path.write_text("\n---\n".join(json.dumps(d) for d in documents))
    return path


def running(guests: LabGuests, host: str, name: str) -> bool:
    """The guest's vCPUs run (a QEMU starting up, paused before the disk lease, does not)."""
    try:
        state = guests.lab.open(host).lookupByName(name).state()[0]
    except libvirt.libvirtError:
        return False
    return bool(state == libvirt.VIR_DOMAIN_RUNNING)


def active(guests: LabGuests, host: str, name: str) -> bool:
    try:
        return bool(guests.lab.open(host).lookupByName(name).isActive())
    except libvirt.libvirtError:
        return False


@pytest.fixture
def ha_fleet(
    lab: Lab,
    tmp_path: Path,
    etcd_prefix: str,
    lab_etcd_proxies: dict[str, TcpProxy],
    shared_dir: Path,
    lab_guests: LabGuests,
) -> Iterator[HaFleet]:
    """The fleet; torn down (hosts stopped, guests removed) before the shared directory."""
    config = json.dumps(
        {
            "shared_storage": [str(lab.shared), "/var/lib/libvirt/images"],
            "disk_roots": [str(lab.shared), "/var/lib/libvirt/images"],
            "fencing_window": 3.0,
        }
    )
    fleet = HaFleet(lab, tmp_path, etcd_prefix, lab_etcd_proxies, config)
    try:
        yield fleet
    finally:
        fleet.stop_all()
        lab_guests.cleanup()


def test_power_loss_restarts_the_ha_guest_elsewhere_and_leaves_the_other(
    lab: Lab, shared_dir: Path, lab_guests: LabGuests, ha_fleet: HaFleet
) -> None:
    ha, plain = lab_guests.name("ha"), lab_guests.name("plain")
    disk = make_qcow2(shared_dir / "ha.qcow2")
    ha_fleet.start("lab1")  # alone: both guests go to lab1
    manifests = write_manifests(
        shared_dir / "domains.yaml",
        domain_manifest(
            ha, lab.domain_type, disks=[{"path": str(disk)}], highAvailability={"restart": True}
        ),
        domain_manifest(plain, lab.domain_type),
    )
    ha_fleet.apply(manifests)
    for name in (ha, plain):
        wait_for(f"{name} running on lab1", lambda n=name: active(lab_guests, "lab1", n), 60)
    ha_fleet.start("lab2")
    ha_fleet.start("lab3")

    pids = [lab.qemu_pid("lab1", ha), lab.qemu_pid("lab1", plain)]
    killed = time.monotonic()
    ha_fleet.kill("lab1")
    for pid in pids:
        os.kill(pid, signal.SIGKILL)

    def running_elsewhere() -> str | None:
        return next((h for h in ("lab2", "lab3") if active(lab_guests, h, ha)), None)

    target = wait_for("the HA guest running elsewhere", running_elsewhere, 60, every=0.1)
    took = time.monotonic() - killed
    print(f"HA recovery: {ha} running on {target} {took:.1f} s after the kill")
    assert ha_fleet.host_of(ha) == target
    (fleet_status,) = [s for s in ha_fleet.statuses(ha) if s["host"] is None]
    assert fleet_status["conditions"][0]["reason"] == "Relocated"
    # The non-HA guest stays placed on the dead host, its status says why, and it runs
    # nowhere.
    assert ha_fleet.host_of(plain) == "lab1"

    def not_ready() -> bool:
        (entry,) = ha_fleet.statuses(plain)
        return any(c["reason"] == "HostNotReady" for c in entry["conditions"])

    wait_for("HostNotReady on the non-HA guest", not_ready, 60)
    assert not any(active(lab_guests, h, plain) for h in lab.hosts)


def test_a_cut_off_host_destroys_its_ha_guest_before_it_starts_elsewhere(
    lab: Lab, shared_dir: Path, lab_guests: LabGuests, ha_fleet: HaFleet
) -> None:
    ha = lab_guests.name("ha")
    disk = make_qcow2(shared_dir / "ha.qcow2")
    ha_fleet.start("lab1")
    ha_fleet.apply(
        write_manifests(
            shared_dir / "ha.yaml",
            domain_manifest(
                ha, lab.domain_type, disks=[{"path": str(disk)}], highAvailability={"restart": True}
            ),
        )
    )
    wait_for("the guest running on lab1", lambda: active(lab_guests, "lab1", ha), 60)
    ha_fleet.start("lab2")

    # Poll both hosts from threads of their own: when each was first seen changed.
    seen: dict[str, float] = {}
    stop = threading.Event()

    def watch(host: str, running: bool, label: str) -> None:
        while not stop.is_set() and label not in seen:
            if active(lab_guests, host, ha) == running:
                seen[label] = time.monotonic()
            time.sleep(0.05)

    cut = time.monotonic()
    ha_fleet.proxies["lab1"].cut()
    watchers = [
        threading.Thread(target=watch, args=("lab1", False, "destroyed"), daemon=True),
        threading.Thread(target=watch, args=("lab2", True, "started"), daemon=True),
    ]
    for watcher in watchers:
        watcher.start()
    try:
        wait_for("the guest started on lab2", lambda: "started" in seen, 90)
    finally:
        stop.set()
    assert "destroyed" in seen, "lab1 never destroyed its HA guest"
    print(
        f"cut-off: destroyed on lab1 {seen['destroyed'] - cut:.1f} s after the cut, "
        f"started on lab2 {seen['started'] - cut:.1f} s after it"
    )
    assert seen["destroyed"] < seen["started"]
    assert "fencing: destroyed HA guest " + ha in ha_fleet.log("lab1")
    assert ha_fleet.host_of(ha) == "lab2"

    # Back: lab1 registers again and leaves the relocated guest alone, stopped, autostart off.
    joins = ha_fleet.log("lab1").count("joined the fleet")
    ha_fleet.proxies["lab1"].restore()
    wait_for("lab1 to rejoin", lambda: ha_fleet.log("lab1").count("joined the fleet") > joins, 60)
    deadline = time.monotonic() + 10  # its relisted share has been reconciled by then
    while time.monotonic() < deadline:
        assert not active(lab_guests, "lab1", ha), "lab1 started the relocated guest"
        time.sleep(0.2)
    stale = lab_guests.conn("lab1").lookupByName(ha)
    assert not stale.autostart()
    assert active(lab_guests, "lab2", ha)


@pytest.fixture
def same_path_images(lab: Lab, prefix: str) -> Iterator[str]:
    """An image of its own on lab1 and lab2 at /var/lib/libvirt/images/PREFIX.qcow2."""
    name = f"{prefix}.qcow2"
    images = [make_qcow2(lab.local_images(host) / name) for host in ("lab1", "lab2")]
    yield f"/var/lib/libvirt/images/{name}"
    for image in images:
        image.unlink(missing_ok=True)


def test_a_host_that_failed_to_fence_keeps_the_disk_lease(
    lab: Lab, same_path_images: str, shared_dir: Path, lab_guests: LabGuests, ha_fleet: HaFleet
) -> None:
    ha = lab_guests.name("ha")
    one, two = (lab.local_images(h) / Path(same_path_images).name for h in ("lab1", "lab2"))
    assert one.stat().st_ino != two.stat().st_ino  # two files: QEMU's own lock cannot clash
    ha_fleet.start("lab1")
    spec = {"disks": [{"path": same_path_images}]}
    ha_fleet.apply(
        write_manifests(
            shared_dir / "ha.yaml",
            domain_manifest(
                ha, lab.domain_type, **spec, highAvailability={"restart": True, "maxRestarts": 100}
            ),
        )
    )
    wait_for("the guest running on lab1", lambda: active(lab_guests, "lab1", ha), 60)
    pid = lab.qemu_pid("lab1", ha)
    ha_fleet.start("lab2")

    ha_fleet.kill("lab1", signal.SIGSTOP)  # frozen: it neither renews nor fences
    wait_for("the guest relocated to lab2", lambda: ha_fleet.host_of(ha) == "lab2", 90)
    lease = hashlib.sha256(same_path_images.encode()).hexdigest()

    def refused() -> bool:
        entries = [s for s in ha_fleet.statuses(ha) if s["host"] == "lab2"]
        return any(f"Lockspace resource '{lease}' is locked" in str(e) for e in entries)

    wait_for("lab2's start refused by the disk lease", refused, 60)
    assert not running(lab_guests, "lab2", ha)  # (a refused start is active a moment)
    assert running(lab_guests, "lab1", ha) and lab.qemu_pid("lab1", ha) == pid

    ha_fleet.kill("lab1", signal.SIGCONT)  # awake: its lease is lost, it fences
    wait_for("the guest running on lab2", lambda: running(lab_guests, "lab2", ha), 90)
    # (a start lab1 had in flight when it froze may try again and be refused a moment)
    wait_for("lab1's copy gone", lambda: not active(lab_guests, "lab1", ha), 30)
    assert running(lab_guests, "lab2", ha)
    assert "fencing: destroyed HA guest " + ha in ha_fleet.log("lab1")
