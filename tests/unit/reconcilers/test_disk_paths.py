"""Disk paths only under the disk roots: the rule (reconcilers/disk_paths.py) on real paths,
and the Domain reconciler blocking a plan on it, against libvirt's ``test:///default``."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
import yaml

from kvmrec import store as stores
from kvmrec.api.kinds import ObjectKey
from kvmrec.api.manifests import parse_file
from kvmrec.backends.hypervisor import Hypervisor
from kvmrec.engine.clock import FakeClock
from kvmrec.engine.workers import PermanentError
from kvmrec.reconcilers.disk_paths import DiskPolicy
from kvmrec.reconcilers.domain import DomainReconciler

URI = "test:///default"


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    images, data = tmp_path / "images", tmp_path / "data"
    images.mkdir()
    data.mkdir()
    return images, data


def policy(*roots: Path, devices: bool = False) -> DiskPolicy:
    return DiskPolicy.of(roots, devices)


# -- the rule ---------------------------------------------------------------------------------


def test_paths_under_a_root_are_allowed_whether_they_exist_or_not(
    roots: tuple[Path, Path],
) -> None:
    images, data = roots
    check = policy(images, data)
    (images / "web.qcow2").write_bytes(b"")
    assert check.problem(str(images / "web.qcow2")) is None
    assert check.problem(str(images / "new.qcow2")) is None
    assert check.problem(str(data / "not" / "yet" / "made.img")) is None


def test_a_path_outside_the_roots_names_the_roots(roots: tuple[Path, Path]) -> None:
    images, data = roots
    problem = policy(images, data).problem("/etc/shadow")
    assert problem == (
        f"/etc/shadow is outside the disk roots ({images}, {data}); "
        "allow its directory with --disk-root"
    )


def test_a_root_is_not_a_prefix_of_its_neighbours(roots: tuple[Path, Path]) -> None:
    images, _ = roots
    assert policy(images).problem(f"{images}-other/web.qcow2") is not None
    assert policy(images).problem(str(images)) is not None  # the root itself is no disk


def test_dot_dot_is_refused_even_when_it_would_stay_inside(roots: tuple[Path, Path]) -> None:
    images, _ = roots
    (images / "sub").mkdir()
    problem = policy(images).problem(f"{images}/sub/../web.qcow2")
    assert problem is not None and "contains '..'" in problem
    assert policy(images).problem("images/web.qcow2") == "images/web.qcow2 is not an absolute path"


def test_a_symlink_in_a_root_that_leads_out_of_it_is_refused(roots: tuple[Path, Path]) -> None:
    images, _ = roots
    (images / "escape").symlink_to("/etc")
    (images / "shadow.img").symlink_to("/etc/shadow")
    for path in (images / "escape" / "passwd", images / "shadow.img", images / "escape" / "new"):
        problem = policy(images).problem(str(path))
        assert problem is not None, path
        assert "outside the disk roots" in problem and "through a symlink, it is /etc/" in problem


def test_a_symlink_that_stays_inside_the_roots_is_allowed(roots: tuple[Path, Path]) -> None:
    images, data = roots
    (images / "big").symlink_to(data)
    assert policy(images, data).problem(str(images / "big" / "web.qcow2")) is None
    assert policy(images).problem(str(images / "big" / "web.qcow2")) is not None


def test_a_root_that_is_a_symlink_counts_where_it_leads(tmp_path: Path) -> None:
    real = tmp_path / "ssd"
    real.mkdir()
    link = tmp_path / "kvm"
    link.symlink_to(real)
    assert policy(link).problem(str(real / "web.qcow2")) is None
    assert policy(link).problem(str(link / "web.qcow2")) is None


def test_device_nodes_need_allow_device_disks() -> None:
    problem = policy(Path("/dev")).problem("/dev/null")
    assert problem == "/dev/null is a character device (device disks need --allow-device-disks)"
    assert policy(Path("/dev"), devices=True).problem("/dev/null") is None
    # Allowed devices still have to be under a root.
    problem = policy(Path("/var/lib/libvirt/images"), devices=True).problem("/dev/null")
    assert problem is not None and "outside the disk roots" in problem
    problem = policy(Path("/var/lib/libvirt/images")).problem("/dev/null")
    assert problem is not None and "character device" in problem and "outside" in problem


@pytest.mark.skipif(not os.path.exists("/dev/loop0"), reason="no /dev/loop0 here")
def test_a_block_device_needs_allow_device_disks() -> None:
    problem = policy(Path("/dev")).problem("/dev/loop0")
    assert problem == "/dev/loop0 is a block device (device disks need --allow-device-disks)"


# -- the Domain reconciler --------------------------------------------------------------------


class World:
    def __init__(self, tmp_path: Path, roots: list[Path] | None) -> None:
        self.prefix = f"ut-{uuid.uuid4().hex[:8]}-"
        self.store = stores.open(tmp_path / "state.db")
        self.hv = Hypervisor(URI)
        self.hv.open()
        self.clock = FakeClock()
        self.reconciler = DomainReconciler(self.store, self.hv, self.clock, disk_roots=roots)

    def apply(self, suffix: str, **spec: Any) -> ObjectKey:
        name = self.prefix + suffix
        document = {
            "apiVersion": "kvmrec.io/v1alpha1",
            "kind": "Domain",
            "metadata": {"name": name},
            "spec": {"memory": "64Mi", **spec},
        }
        [manifest] = parse_file(f"{name}.yaml", yaml.safe_dump(document).encode())
        self.store.apply(manifest, self.clock.wall())
        return manifest.key

    def defined(self, key: ObjectKey) -> bool:
        return self.hv.get_domain(key.name) is not None

    def close(self) -> None:
        conn = libvirt.open(URI)
        for dom in conn.listAllDomains(0):
            if dom.name().startswith(self.prefix):
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        conn.close()
        self.hv.close()
        self.store.close()


@pytest.fixture
def world(tmp_path: Path, roots: tuple[Path, Path]) -> Iterator[World]:
    w = World(tmp_path, list(roots))
    yield w
    w.close()


def outside(tmp_path: Path, name: str) -> Path:
    path = tmp_path / "elsewhere" / name
    path.parent.mkdir(exist_ok=True)
    return path


@pytest.mark.parametrize("field", ["path", "backingImage", "cloneFrom.path"])
def test_a_disk_outside_the_roots_blocks_the_plan_and_nothing_is_made(
    world: World, roots: tuple[Path, Path], tmp_path: Path, field: str
) -> None:
    images, data = roots
    base = outside(tmp_path, "base.qcow2")
    base.write_bytes(b"\0" * 65536)
    disk: dict[str, Any] = {"path": str(images / "web.qcow2"), "size": "16Mi"}
    if field == "path":
        disk["path"] = str(outside(tmp_path, "web.qcow2"))
    elif field == "backingImage":
        disk["backingImage"] = str(base)
    else:
        disk["cloneFrom"] = {"path": str(base)}
    key = world.apply("out", disks=[disk])

    plan = world.reconciler.plan(world.store.get(key))  # type: ignore[arg-type]
    assert plan.blocked_reason == "DiskPathNotAllowed"
    assert plan.blocked is not None
    assert plan.blocked.startswith(f"spec.disks[0].{field}: ")
    assert f"outside the disk roots ({images}, {data})" in plan.blocked

    with pytest.raises(PermanentError, match=re.escape(f"spec.disks[0].{field}")):
        world.reconciler.reconcile(key)
    status = world.store.get_status(key)
    assert status is not None
    for type_ in ("Ready", "Synced"):
        cond = status.condition(type_)
        assert cond is not None and (cond.status, cond.reason) == ("False", "DiskPathNotAllowed")
        assert str(images) in cond.message
    assert not world.defined(key)
    assert list(images.iterdir()) == [] and sorted(base.parent.iterdir()) == [base]


def test_every_refused_field_is_named(world: World, roots: tuple[Path, Path]) -> None:
    images, _ = roots
    key = world.apply(
        "many",
        disks=[
            {"path": str(images / "ok.qcow2"), "size": "16Mi"},
            {"path": "/etc/passwd"},
            {"path": "/dev/null", "device": "cdrom"},
        ],
    )
    plan = world.reconciler.plan(world.store.get(key))  # type: ignore[arg-type]
    assert plan.blocked is not None
    assert "spec.disks[1].path: /etc/passwd is outside" in plan.blocked
    assert "spec.disks[2].path: /dev/null is a character device" in plan.blocked
    assert "spec.disks[0]" not in plan.blocked


def test_a_clone_of_another_domains_disk_outside_the_roots_is_refused(
    world: World, roots: tuple[Path, Path], tmp_path: Path
) -> None:
    images, _ = roots
    # Another domain (not kvmrec's) whose disk is a file outside the roots.
    theirs = outside(tmp_path, "theirs.img")
    theirs.write_bytes(b"\0" * 65536)
    other = world.prefix + "theirs"
    world.hv.define_domain(
        f"<domain type='test'><name>{other}</name><memory>65536</memory><os><type>hvm</type>"
        f"</os><devices><disk type='file' device='disk'><source file='{theirs}'/>"
        "<target dev='vda' bus='virtio'/></disk></devices></domain>"
    )
    key = world.apply(
        "copy", disks=[{"path": str(images / "copy.img"), "cloneFrom": {"domain": other}}]
    )
    plan = world.reconciler.plan(world.store.get(key))  # type: ignore[arg-type]
    assert plan.blocked_reason == "DiskPathNotAllowed"
    assert plan.blocked is not None
    assert plan.blocked.startswith(f"spec.disks[0].cloneFrom (disk 0 of domain {other}): {theirs}")
    assert list(images.iterdir()) == []


def test_a_disk_under_a_root_is_made_and_defined(world: World, roots: tuple[Path, Path]) -> None:
    images, _ = roots
    key = world.apply(
        "in", runStrategy="Halted", disks=[{"path": str(images / "in.qcow2"), "size": "16Mi"}]
    )
    world.reconciler.reconcile(key)
    assert world.defined(key)
    assert (images / "in.qcow2").exists()


def test_without_roots_the_reconciler_places_no_restriction(tmp_path: Path) -> None:
    w = World(tmp_path, None)
    try:
        key = w.apply("free", disks=[{"path": str(outside(tmp_path, "free.qcow2")), "size": "1Mi"}])
        plan = w.reconciler.plan(w.store.get(key))  # type: ignore[arg-type]
        assert plan.blocked is None
    finally:
        w.close()


def test_an_image_outside_the_roots_is_never_deleted(
    tmp_path: Path, roots: tuple[Path, Path]
) -> None:
    """Made while it was allowed (no roots, or other roots then), deleted under stricter ones:
    the domain goes, the file stays."""
    free = World(tmp_path, None)
    strict = DomainReconciler(free.store, free.hv, free.clock, disk_roots=list(roots))
    try:
        image = outside(tmp_path, "keep.qcow2")
        key = free.apply(
            "keep",
            runStrategy="Halted",
            disks=[{"path": str(image), "size": "1Mi", "deletionPolicy": "Delete"}],
        )
        free.reconciler.reconcile(key)
        assert image.exists()
        free.store.mark_deleting(key, free.clock.wall())
        obj = free.store.get(key)
        assert obj is not None
        assert strict.plan(obj).steps[0].detail == "destroy and undefine"
        strict.reconcile(key)
        assert not free.defined(key)
        assert image.exists()
    finally:
        free.close()
