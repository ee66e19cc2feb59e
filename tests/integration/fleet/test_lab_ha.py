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

import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from realstack import wait_for

from support.fleet import LabFleet, lab_fleet_of
from support.lab import Lab, LabGuests, stack_etcd_address, stack_etcd_url

pytestmark = pytest.mark.integration


def make_qcow2(path: Path) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"], check=True)
    return path


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
def ha_lab(lab: Lab, tmp_path: Path, shared_dir: Path) -> Iterator[LabFleet]:
    """The fleet, no host started yet; torn down (hosts stopped, guests removed) before
    the shared directory."""
    config = tmp_path / "kvmrec.yaml"
    config.write_text(
        json.dumps(
            {
                "shared_storage": [str(lab.shared), "/var/lib/libvirt/images"],
                "disk_roots": [str(lab.shared), "/var/lib/libvirt/images"],
                "fencing_window": 3.0,
            }
        )
    )
    etcd = stack_etcd_url().removeprefix("http://")
    with lab_fleet_of(
        lab,
        tmp_path / "fleet",
        etcd,
        proxy_to=stack_etcd_address(),
        options=("--config", str(config)),
        namespaced=True,
        start=False,
    ) as fleet:
        yield fleet


def test_power_loss_restarts_the_ha_guest_elsewhere_and_leaves_the_other(
    lab: Lab, shared_dir: Path, ha_lab: LabFleet
) -> None:
    ha, plain = ha_lab.guests.name("ha"), ha_lab.guests.name("plain")
    disk = make_qcow2(shared_dir / "ha.qcow2")
    ha_lab.fleet.start(["lab1"])  # alone: both guests go to lab1
    manifests = write_manifests(
        shared_dir / "domains.yaml",
        domain_manifest(
            ha, lab.domain_type, disks=[{"path": str(disk)}], highAvailability={"restart": True}
        ),
        domain_manifest(plain, lab.domain_type),
    )
    ha_lab.fleet.apply_file(manifests)
    for name in (ha, plain):
        wait_for(lambda n=name: active(ha_lab.guests, "lab1", n), 60, f"{name} running on lab1")
    ha_lab.fleet.start(["lab2", "lab3"])

    pids = [lab.qemu_pid("lab1", ha), lab.qemu_pid("lab1", plain)]
    killed = time.monotonic()
    ha_lab.fleet.signal("lab1", signal.SIGKILL)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)

    def running_elsewhere() -> str | None:
        return next((h for h in ("lab2", "lab3") if active(ha_lab.guests, h, ha)), None)

    target = wait_for(running_elsewhere, 60, "the HA guest running elsewhere")
    took = time.monotonic() - killed
    print(f"HA recovery: {ha} running on {target} {took:.1f} s after the kill")
    assert ha_lab.fleet.placement(ha) == target
    (fleet_status,) = [s for s in ha_lab.fleet.objects("Domain", ha) if s["host"] is None]
    assert fleet_status["conditions"][0]["reason"] == "Relocated"
    # The non-HA guest stays placed on the dead host, its status says why, and it runs
    # nowhere.
    assert ha_lab.fleet.placement(plain) == "lab1"

    def not_ready() -> bool:
        (entry,) = ha_lab.fleet.objects("Domain", plain)
        return any(c["reason"] == "HostNotReady" for c in entry["conditions"])

    wait_for(not_ready, 60, "HostNotReady on the non-HA guest")
    assert not any(active(ha_lab.guests, h, plain) for h in lab.hosts)


def test_a_cut_off_host_destroys_its_ha_guest_before_it_starts_elsewhere(
    lab: Lab, shared_dir: Path, ha_lab: LabFleet
) -> None:
    ha = ha_lab.guests.name("ha")
    disk = make_qcow2(shared_dir / "ha.qcow2")
    ha_lab.fleet.start(["lab1"])
    ha_lab.fleet.apply_file(
        write_manifests(
            shared_dir / "ha.yaml",
            domain_manifest(
                ha, lab.domain_type, disks=[{"path": str(disk)}], highAvailability={"restart": True}
            ),
        )
    )
    wait_for(lambda: active(ha_lab.guests, "lab1", ha), 60, "the guest running on lab1")
    ha_lab.fleet.start(["lab2"])

    # Poll both hosts from threads of their own: when each was first seen changed.
    seen: dict[str, float] = {}
    stop = threading.Event()

    def watch(host: str, running: bool, label: str) -> None:
        while not stop.is_set() and label not in seen:
            if active(ha_lab.guests, host, ha) == running:
                seen[label] = time.monotonic()
            time.sleep(0.05)

    cut = time.monotonic()
    ha_lab.proxies["lab1"].cut()
    watchers = [
        threading.Thread(target=watch, args=("lab1", False, "destroyed"), daemon=True),
        threading.Thread(target=watch, args=("lab2", True, "started"), daemon=True),
    ]
    for watcher in watchers:
        watcher.start()
    try:
        wait_for(lambda: "started" in seen, 90, "the guest started on lab2")
    finally:
        stop.set()
    assert "destroyed" in seen, "lab1 never destroyed its HA guest"
    print(
        f"cut-off: destroyed on lab1 {seen['destroyed'] - cut:.1f} s after the cut, "
        f"started on lab2 {seen['started'] - cut:.1f} s after it"
    )
    assert seen["destroyed"] < seen["started"]
    assert "fencing: destroyed HA guest " + ha in ha_lab.fleet.hosts["lab1"].log_text()
    assert ha_lab.fleet.placement(ha) == "lab2"

    # Back: lab1 registers again and leaves the relocated guest alone, stopped, autostart off.
    lab1 = ha_lab.fleet.hosts["lab1"]
    joins = lab1.log_text().count("joined the fleet")
    ha_lab.proxies["lab1"].restore()
    wait_for(lambda: lab1.log_text().count("joined the fleet") > joins, 60, "lab1 to rejoin")
    deadline = time.monotonic() + 10  # its relisted share has been reconciled by then
    while time.monotonic() < deadline:
        assert not active(ha_lab.guests, "lab1", ha), "lab1 started the relocated guest"
        time.sleep(0.2)
    stale = ha_lab.guests.conn("lab1").lookupByName(ha)
    assert not stale.autostart()
    assert active(ha_lab.guests, "lab2", ha)


@pytest.fixture
def same_path_images(lab: Lab, prefix: str) -> Iterator[str]:
    """An image of its own on lab1 and lab2 at /var/lib/libvirt/images/PREFIX.qcow2."""
    name = f"{prefix}.qcow2"
    images = [make_qcow2(lab.local_images(host) / name) for host in ("lab1", "lab2")]
    yield f"/var/lib/libvirt/images/{name}"
    for image in images:
        image.unlink(missing_ok=True)


def test_a_host_that_failed_to_fence_keeps_the_disk_lease(
    lab: Lab, same_path_images: str, shared_dir: Path, ha_lab: LabFleet
) -> None:
    ha = ha_lab.guests.name("ha")
    one, two = (lab.local_images(h) / Path(same_path_images).name for h in ("lab1", "lab2"))
    assert one.stat().st_ino != two.stat().st_ino  # two files: QEMU's own lock cannot clash
    ha_lab.fleet.start(["lab1"])
    spec = {"disks": [{"path": same_path_images}]}
    ha_lab.fleet.apply_file(
        write_manifests(
            shared_dir / "ha.yaml",
            domain_manifest(
                ha, lab.domain_type, **spec, highAvailability={"restart": True, "maxRestarts": 100}
            ),
        )
    )
    wait_for(lambda: active(ha_lab.guests, "lab1", ha), 60, "the guest running on lab1")
    pid = lab.qemu_pid("lab1", ha)
    ha_lab.fleet.start(["lab2"])

    ha_lab.fleet.signal("lab1", signal.SIGSTOP)  # frozen: it neither renews nor fences
    wait_for(lambda: ha_lab.fleet.placement(ha) == "lab2", 90, "the guest relocated to lab2")
    lease = hashlib.sha256(same_path_images.encode()).hexdigest()

    def refused() -> bool:
        entries = [s for s in ha_lab.fleet.objects("Domain", ha) if s["host"] == "lab2"]
        return any(f"Lockspace resource '{lease}' is locked" in str(e) for e in entries)

    wait_for(refused, 60, "lab2's start refused by the disk lease")
    assert not running(ha_lab.guests, "lab2", ha)  # (a refused start is active a moment)
    assert running(ha_lab.guests, "lab1", ha) and lab.qemu_pid("lab1", ha) == pid

    ha_lab.fleet.signal("lab1", signal.SIGCONT)  # awake: its lease is lost, it fences
    wait_for(lambda: running(ha_lab.guests, "lab2", ha), 90, "the guest running on lab2")
    # (a start lab1 had in flight when it froze may try again and be refused a moment)
    wait_for(lambda: not active(ha_lab.guests, "lab1", ha), 30, "lab1's copy gone")
    assert running(ha_lab.guests, "lab2", ha)
    assert "fencing: destroyed HA guest " + ha in ha_lab.fleet.hosts["lab1"].log_text()
