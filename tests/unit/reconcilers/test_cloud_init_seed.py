"""A Domain's cloud-init seed (reconcilers/seeds.py) against libvirt's ``test:///default``:
made next to the disks, attached, drift when its content changes, never written over a
file kvmrec did not make, deleted with the domain."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import testdriver

from kvmrec.backends import domain_xml, seed_iso
from kvmrec.engine.workers import PermanentError

USER_DATA = "#cloud-config\nruncmd:\n  - [touch, /tmp/made-by-cloud-init]\n"


@dataclass
class World(testdriver.DomainWorld):
    def seed(self, name: str) -> Path:
        return self.root / f"{name}-cidata.iso"


@pytest.fixture
def world(tmp_path: Path, conn: Any) -> Iterator[World]:
    with testdriver.domain_world(tmp_path, conn) as (w, reconciler, root):
        yield World(w.prefix, conn, w.store, w.hv, w.clock, reconciler, root)


def test_the_seed_is_made_attached_and_holds_exactly_its_files(world: World) -> None:
    name = world.name("ci")
    key = world.apply(name, cloudInit={"userData": USER_DATA})
    plan = world.reconciler.plan(world.store.get(key))  # type: ignore[arg-type]
    assert [s.action for s in plan.steps][:2] == ["build-seed", "create"]
    assert not world.seed(name).exists()  # a plan makes nothing

    world.reconcile(key)
    ident, files = seed_iso.read(str(world.seed(name)))
    assert ident == seed_iso.stamp(name)
    uuid = domain_xml.stable_uuid(name)
    assert files == {
        "user-data": USER_DATA.encode(),
        "meta-data": f"instance-id: {uuid}\nlocal-hostname: {name}\n".encode(),
    }
    [seed] = world.config(name).disks
    assert (seed.path, seed.device, seed.bus, seed.read_only) == (
        str(world.seed(name)),
        "cdrom",
        "sata",
        True,
    )
    assert seed.serial == seed_iso.digest(files)[:20]
    details = world.status(key).details["cloudInit"]
    assert details == {"path": str(world.seed(name)), "digest": seed.serial, "bus": "sata"}
    assert "SeedBuilt" in world.reasons(key)
    # Converged: nothing more to do.
    assert not world.reconciler.plan(world.store.get(key)).steps  # type: ignore[arg-type]


def test_files_meta_data_and_network_config_and_a_virtio_seed(world: World) -> None:
    name = world.name("cf")
    (world.root / "user.yaml").write_bytes(b"#cloud-config\n\xe2\x9c\x93\n")
    key = world.apply(
        name,
        cloudInit={
            "userData": {"file": str(world.root / "user.yaml")},
            "metaData": "instance-id: fixed\n",
            "networkConfig": "version: 2\n",
            "bus": "virtio",
        },
    )
    world.reconcile(key)
    _, files = seed_iso.read(str(world.seed(name)))
    assert files == {
        "user-data": b"#cloud-config\n\xe2\x9c\x93\n",
        "meta-data": b"instance-id: fixed\n",
        "network-config": b"version: 2\n",
    }
    [seed] = world.config(name).disks
    assert (seed.device, seed.bus, seed.read_only) == ("disk", "virtio", True)


def test_a_new_user_data_is_drift_rebuilds_the_seed_and_needs_a_restart(world: World) -> None:
    name = world.name("cd")
    key = world.apply(name, cloudInit={"userData": USER_DATA})
    world.reconcile(key)
    assert world.running(name)
    before = world.config(name).disks[0].serial

    world.apply(name, cloudInit={"userData": USER_DATA + "# changed\n"})
    plan = world.reconciler.plan(world.store.get(key))  # type: ignore[arg-type]
    by_action = {s.action: s for s in plan.steps}
    assert by_action["build-seed"].fields[0].field == "spec.cloudInit"
    assert "spec.cloudInit" in [d.field for d in by_action["update"].fields]
    assert "spec.cloudInit" in [d.field for d in by_action["update-at-restart"].fields]

    world.reconcile(key)
    _, files = seed_iso.read(str(world.seed(name)))
    assert files["user-data"] == (USER_DATA + "# changed\n").encode()
    after = world.config(name).disks[0].serial
    assert after != before and after == seed_iso.digest(files)[:20]
    restart = world.status(key).condition("RestartRequired")
    assert restart is not None and restart.status == "True"
    assert "spec.cloudInit" in restart.message


def test_a_seed_changed_by_hand_is_made_again(world: World) -> None:
    name = world.name("ch")
    key = world.apply(name, cloudInit={"userData": USER_DATA})
    world.reconcile(key)
    seed_iso.write(str(world.seed(name)), name, {"user-data": b"tampered"})
    plan = world.reconciler.plan(world.store.get(key))  # type: ignore[arg-type]
    assert [s.action for s in plan.steps] == ["build-seed"]
    world.reconcile(key)
    assert seed_iso.read(str(world.seed(name)))[1]["user-data"] == USER_DATA.encode()


def test_a_file_kvmrec_did_not_make_is_never_written_over(world: World) -> None:
    name = world.name("ft")
    world.seed(name).write_bytes(b"someone else's ISO")
    key = world.apply(name, cloudInit={"userData": USER_DATA})
    plan = world.reconciler.plan(world.store.get(key))  # type: ignore[arg-type]
    assert plan.blocked_reason == "SeedNotMade"
    assert plan.blocked is not None and "is not a seed kvmrec made for this domain" in plan.blocked
    with pytest.raises(PermanentError):
        world.reconcile(key)
    assert world.seed(name).read_bytes() == b"someone else's ISO"
    assert not world.exists(name)


def test_a_user_data_file_outside_the_roots_or_missing_blocks(world: World) -> None:
    name = world.name("fo")
    key = world.apply(name, cloudInit={"userData": {"file": "/etc/shadow"}})
    plan = world.reconciler.plan(world.store.get(key))  # type: ignore[arg-type]
    assert plan.blocked_reason == "SeedNotMade"
    assert plan.blocked is not None
    assert plan.blocked.startswith("spec.cloudInit.userData.file: /etc/shadow is outside")
    key = world.apply(name, cloudInit={"userData": {"file": str(world.root / "none.yaml")}})
    plan = world.reconciler.plan(world.store.get(key))  # type: ignore[arg-type]
    assert plan.blocked is not None and "No such file or directory" in plan.blocked


def test_the_seed_goes_with_the_domain_and_only_its_own(world: World) -> None:
    name = world.name("dl")
    key = world.apply(name, cloudInit={"userData": USER_DATA}, terminationGracePeriodSeconds=0)
    world.reconcile(key)
    other = world.root / "keep.iso"
    seed_iso.write(str(other), "another", {"user-data": b""})
    world.store.mark_deleting(key, world.clock.wall())
    world.reconcile(key)
    assert not world.exists(name)
    assert not world.seed(name).exists()
    assert other.exists()


def test_a_domain_with_a_seed_is_stale_on_every_resync_so_a_new_source_file_is_found(
    world: World,
) -> None:
    name, plain = world.name("rs"), world.name("rp")
    source = world.root / "user.yaml"
    source.write_text(USER_DATA)
    key = world.apply(name, cloudInit={"userData": {"file": str(source)}})
    other = world.apply(plain)
    for _ in range(2):  # the second finds nothing to do: converged
        world.reconcile(key)
        world.reconcile(other)
    assert world.reconciler.stale([key, other]) == [key]

    source.write_text(USER_DATA + "# edited\n")
    world.reconcile(key)  # what the resync does with a stale key
    assert (
        seed_iso.read(str(world.seed(name)))[1]["user-data"] == (USER_DATA + "# edited\n").encode()
    )
    restart = world.status(key).condition("RestartRequired")
    assert restart is not None and restart.status == "True"
