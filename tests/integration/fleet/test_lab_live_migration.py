"""Live migration and drain in the lab: kvmrec hosts run as processes, each in its lab
host's mount namespace (so it sees that host's own /var/lib/libvirt/images), on one etcd
prefix of the test; guests move with ``kvmrec migrate`` and ``kvmrec drain``.

- the test guest (TCG, a real kernel, qemu-ga) migrates live: the agent answers while it
  migrates and afterwards, a file written before is read back, the kernel was not
  restarted, the placement moved;
- a guest with a local disk is refused without --copy-storage (named before anything
  starts) and moves with it, its image made at the target;
- a migration held to a trickle while the guest rewrites its memory makes no progress and
  is cancelled, the guest left running at the source;
- an operator cancels a running migration (``kvmrec migrate --cancel --wait``): libvirt's
  job is aborted, the guest keeps running at the source and was never defined at the target;
- drain of a host with three guests: one moves live, one on a local disk is listed (and
  with --force stopped and started elsewhere), the pinned one stays and is listed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from guest_os import (
    GuestImage,
    agent_answers,
    agent_command,
    copy_data_disk,
    guest_exec,
    guest_spec,
)
from realstack import domain_manifest, wait_for

from support.fleet import Fleet, LabFleet, lab_fleet_of
from support.lab import Lab

pytestmark = pytest.mark.integration

ETCD = "127.0.0.1:2379"


@pytest.fixture
def migration_lab(lab: Lab, tmp_path: Path) -> Iterator[LabFleet]:
    """The lab's hosts on a prefix of this test, none started yet, each in its own mount
    namespace with the lab's shared storage declared."""
    options = (
        "--migration-address", "127.0.0.1",
        "--shared-storage", str(lab.shared),
        "--disk-root", "/var/lib/libvirt/images",
        "--disk-root", str(lab.shared),
    )  # fmt: skip
    with lab_fleet_of(
        lab, tmp_path / "fleet", ETCD, options=options, namespaced=True, start=False
    ) as running:
        yield running


def wait_placed(fleet: Fleet, name: str, timeout: float = 60) -> str:
    return str(
        wait_for(lambda: fleet.running_on(name), timeout, f"{name} running (logs: {fleet.root})")
    )


def other(fleet: Fleet, host: str) -> str:
    return next(h for h, x in fleet.hosts.items() if h != host and x.running)


def running_test_guest(
    lab: LabFleet, guest_image: GuestImage, name: str, *options: str
) -> tuple[str, str, Any]:
    """lab1 and lab2 started, the test guest ``name`` placed and its agent answering: its
    host, the other one, and its host's libvirt connection."""
    fleet = lab.fleet
    fleet.start(["lab1", "lab2"], extra=(*options, "--disk-root", str(guest_image.dir)))
    fleet.apply({name: domain_manifest(name, "qemu", **guest_spec(guest_image, name))})
    source = wait_placed(fleet, name, timeout=120)
    conn = lab.guests.conn(source)
    wait_for(lambda: agent_answers(conn, name), 300, "the agent answering")
    return source, other(fleet, source), conn


def tiny(name: str, lab: Lab, **spec: Any) -> str:
    spec.setdefault("console", "serial")
    spec.setdefault("terminationGracePeriodSeconds", 0)
    return domain_manifest(name, lab.domain_type, **spec)


def test_the_test_guest_migrates_live_with_its_agent_answering(
    migration_lab: LabFleet, lab: Lab, guest_image: GuestImage, shared_dir: Path
) -> None:
    fleet, guests = migration_lab.fleet, migration_lab.guests
    fleet.start(["lab1", "lab2"], extra=("--disk-root", str(guest_image.dir)))
    name = guests.name("live")
    data = copy_data_disk(guest_image, shared_dir / "data.qcow2")  # on shared storage
    spec = guest_spec(guest_image, name, data=data)
    fleet.apply({name: domain_manifest(name, "qemu", **spec)})
    source = wait_placed(fleet, name, timeout=120)
    target = other(fleet, source)
    conns = {h: guests.conn(h) for h in (source, target)}
    wait_for(lambda: agent_answers(conns[source], name), 300, "the agent answering")
    token = f"written before the migration {time.time()}"
    assert (
        guest_exec(conns[source], name, "/bin/sh", "-c", f"echo '{token}' > /mnt/data/f; sync")[0]
        == 0
    )
    _, uptime_before = guest_exec(conns[source], name, "/bin/cat", "/proc/uptime")

    answered: list[tuple[float, str]] = []  # (when, where) of each answer during the move
    stop = threading.Event()

    def ping() -> None:
        while not stop.is_set():
            for host, conn in conns.items():
                try:
                    if conn.lookupByName(name).isActive() and agent_answers(conn, name):
                        answered.append((time.monotonic(), host))
                        break
                except libvirt.libvirtError:
                    continue
            time.sleep(0.1)

    pinger = threading.Thread(target=ping, daemon=True)
    pinger.start()
    asked = time.monotonic()
    done = fleet.kvmrec("migrate", name, "--to", target, "--wait", timeout=300)
    ended = time.monotonic()
    wait_for(lambda: any(h == target for _, h in answered), 120, "the agent on the target")
    stop.set()
    pinger.join(5)
    assert done.returncode == 0, done.stdout + done.stderr + fleet.logs()
    assert "Succeeded" in done.stdout
    during = [h for t, h in answered if asked <= t <= ended]
    assert source in during, "the agent did not answer at the source while it migrated"

    assert fleet.placement(name) == target
    assert name not in guests.names(source, active_only=False)
    # The same kernel runs on: the file written before is there, uptime went on.
    assert guest_exec(conns[target], name, "/bin/cat", "/mnt/data/f") == (0, token + "\n")
    _, uptime_after = guest_exec(conns[target], name, "/bin/cat", "/proc/uptime")
    assert float(uptime_after.split()[0]) > float(uptime_before.split()[0])
    assert wait_placed(fleet, name) == target
    migration = fleet.read_json(f"migrations/Domain/{name}")
    assert migration is not None and migration["state"] == "Succeeded"
    print(f"test guest live migration: {migration['progress']}, cli {ended - asked:.1f}s")


def test_a_local_disk_moves_only_with_copy_storage(migration_lab: LabFleet, lab: Lab) -> None:
    fleet, guests = migration_lab.fleet, migration_lab.guests
    fleet.start(["lab1"])
    fleet.start(["lab2"])
    name = guests.name("cs")
    path = f"/var/lib/libvirt/images/{name}.qcow2"  # each host's own directory
    fleet.apply({name: tiny(name, lab, disks=[{"path": path, "format": "qcow2", "size": "16Mi"}])})
    source = wait_placed(fleet, name)
    target = other(fleet, source)
    assert (lab.local_images(source) / f"{name}.qcow2").exists()
    assert not (lab.local_images(target) / f"{name}.qcow2").exists()

    refused = fleet.kvmrec("migrate", name, "--to", target, "--wait")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "--copy-storage" in refused.stdout
    assert fleet.placement(name) == source
    assert guests.conn(source).lookupByName(name).isActive()
    assert not (lab.local_images(target) / f"{name}.qcow2").exists()  # nothing touched

    started = time.monotonic()
    moved = fleet.kvmrec("migrate", name, "--to", target, "--copy-storage", "--wait")
    took = time.monotonic() - started
    assert moved.returncode == 0, moved.stdout + moved.stderr + fleet.logs()
    assert fleet.placement(name) == target
    assert (lab.local_images(target) / f"{name}.qcow2").exists()
    assert guests.conn(target).lookupByName(name).isActive()
    assert name not in guests.names(source, active_only=False)
    assert wait_placed(fleet, name) == target
    print(
        f"copy-storage migration: {fleet.read_json(f'migrations/Domain/{name}')}, cli {took:.1f}s"
    )


def test_a_migration_without_progress_is_cancelled_and_the_guest_stays(
    migration_lab: LabFleet, lab: Lab, guest_image: GuestImage
) -> None:
    fleet, guests = migration_lab.fleet, migration_lab.guests
    name = guests.name("stall")
    source, target, conn = running_test_guest(
        migration_lab, guest_image, name, "--migration-stall-timeout", "8"
    )
    # The guest rewrites 24 MiB of memory over and over, faster than the trickle moves it.
    guest_exec(conn, name, "/bin/sh", "-c", "head -c 25165824 /dev/urandom > /tmp/blob")
    loop = "while :; do cp /tmp/blob /tmp/b2; done"
    agent_command(  # guest-exec without waiting: the loop runs on
        conn,
        name,
        {"execute": "guest-exec", "arguments": {"path": "/bin/sh", "arg": ["-c", loop]}},
    )
    # 4 MiB/s: the first pass over the 192 MiB guest takes well under a minute; after it
    # the rewritten pages come back faster than they go.
    conn.lookupByName(name).migrateSetMaxSpeed(4, 0)

    done = fleet.kvmrec("migrate", name, "--to", target, "--wait", timeout=600)
    assert done.returncode == 2, done.stdout + done.stderr
    migration = fleet.read_json(f"migrations/Domain/{name}")
    assert migration is not None and migration["state"] == "Cancelled", migration
    assert "no progress for 8s" in migration["reason"]
    assert fleet.placement(name) == source
    assert conn.lookupByName(name).isActive()
    assert agent_answers(conn, name)
    assert name not in guests.names(target, active_only=False)
    events = fleet.kvmrec("events").stdout
    assert "MigrationCancelled" in events
    print(f"cancelled migration: {migration}")


def test_an_operator_cancels_a_running_migration_and_the_guest_stays(
    migration_lab: LabFleet, lab: Lab, guest_image: GuestImage
) -> None:
    fleet, guests = migration_lab.fleet, migration_lab.guests
    name = guests.name("cancel")
    source, target, conn = running_test_guest(migration_lab, guest_image, name)
    # 16 MiB of memory no zero-page shortcut moves, at 1 MiB/s: a pass of 16 s at least.
    guest_exec(conn, name, "/bin/sh", "-c", "head -c 16777216 /dev/urandom > /tmp/blob")
    conn.lookupByName(name).migrateSetMaxSpeed(1, 0)

    asked = fleet.kvmrec("migrate", name, "--to", target)
    assert asked.returncode == 0, asked.stdout + asked.stderr
    wait_for(
        lambda: (fleet.read_json(f"migrations/Domain/{name}") or {}).get("progress"),
        60,
        "the migration running, its first progress written",
    )
    cancelled = fleet.kvmrec("migrate", name, "--cancel", "--wait", timeout=120)
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert "cancel requested" in cancelled.stdout and "Cancelled" in cancelled.stdout
    migration = fleet.read_json(f"migrations/Domain/{name}")
    assert migration["state"] == "Cancelled" and migration["cancel"] is True, migration
    assert migration["reason"].startswith("cancelled by the operator"), migration
    assert fleet.placement(name) == source
    assert conn.lookupByName(name).isActive()
    assert agent_answers(conn, name)
    assert name not in guests.names(target, active_only=False)
    assert "MigrationCancelled" in fleet.kvmrec("events").stdout
    again = fleet.kvmrec("migrate", name, "--cancel")
    assert again.returncode == 2 and "no migration under way" in again.stderr
    print(f"cancelled by the operator: {migration}")


def test_drain_moves_what_it_can_and_lists_the_rest(migration_lab: LabFleet, lab: Lab) -> None:
    fleet, guests = migration_lab.fleet, migration_lab.guests
    fleet.start(["lab1"])
    live, local, pinned = (guests.name(s) for s in ("d-live", "d-local", "d-pinned"))
    disk = {"path": f"/var/lib/libvirt/images/{local}.qcow2", "format": "qcow2", "size": "16Mi"}
    fleet.apply({live: tiny(live, lab)})
    fleet.apply({local: tiny(local, lab, disks=[disk])})
    fleet.apply({pinned: tiny(pinned, lab, host="lab1")})
    for name in (live, local, pinned):
        assert wait_placed(fleet, name) == "lab1"
    fleet.start(["lab2"])
    wait_for(lambda: fleet.kvmrec("status").returncode in (0, 2) and fleet.ready("lab2"), 30)

    started = time.monotonic()
    drained = fleet.kvmrec("drain", "lab1", "--timeout", "120")
    took = time.monotonic() - started
    assert drained.returncode == 2, drained.stdout + drained.stderr + fleet.logs()
    assert fleet.read_json("hostinfo/lab1")["cordoned"] is True
    assert fleet.read_json("hostinfo/lab1")["draining"] is True
    assert fleet.placement(live) == "lab2"
    assert wait_placed(fleet, live) == "lab2"
    assert f"Domain/{pinned} stays on lab1: pinned to lab1 by spec.host" in drained.stdout
    assert f"Domain/{local} stays on lab1: Failed: disk vda is on a local path" in drained.stdout
    assert fleet.placement(local) == "lab1" and fleet.placement(pinned) == "lab1"
    assert guests.conn("lab1").lookupByName(local).isActive()

    forced = fleet.kvmrec("drain", "lab1", "--force", "--timeout", "120")
    assert forced.returncode == 2, forced.stdout + forced.stderr + fleet.logs()
    assert f"Domain/{pinned} stays on lab1: pinned to lab1 by spec.host" in forced.stdout
    assert f"Domain/{local} stays" not in forced.stdout
    # Stopped on lab1 and started on lab2 by the scheduler (a new local disk there).
    assert wait_for(lambda: fleet.running_on(local) == "lab2", 60, f"{local} on lab2")
    assert local not in guests.names("lab1", active_only=False)
    assert fleet.placement(pinned) == "lab1"
    assert guests.conn("lab1").lookupByName(pinned).isActive()
    # A new guest is not placed on the cordoned host.
    late = guests.name("d-late")
    fleet.apply({late: tiny(late, lab)})
    assert wait_placed(fleet, late) == "lab2"
    assert fleet.kvmrec("uncordon", "lab1").returncode == 0
    assert fleet.read_json("hostinfo/lab1")["cordoned"] is False
    print(f"drain of lab1 (one live migration): {took:.1f}s")
