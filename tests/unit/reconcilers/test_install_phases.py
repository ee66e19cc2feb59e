"""Installs from media (reconcilers/installs.py) against libvirt's ``test:///default``: the
installer's definition, its end at the guest's first power off, the definition after it,
never an install again (also across a restart of kvmrec), and the media's path checks."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import testdriver
import yaml

from kvmrec.api.errors import ManifestError
from kvmrec.api.kinds import ObjectKey
from kvmrec.api.manifests import parse_file
from kvmrec.backends import installer_media
from kvmrec.cli import describe
from kvmrec.engine.workers import PermanentError
from kvmrec.reconcilers.domain import DomainReconciler
from support import installer_iso

KERNEL = b"\x7fkernel of the installer" * 1000
INITRD = b"initrd of the installer" * 500


@dataclass
class World(testdriver.DomainWorld):
    def restart_kvmrec(self) -> None:
        """A new reconciler on the same store: all it knows is what the status holds."""
        self.reconciler = DomainReconciler(self.store, self.hv, self.clock, disk_roots=[self.root])

    def plan_actions(self, key: ObjectKey) -> list[str]:
        plan = self.reconciler.plan(self.store.get(key))  # type: ignore[arg-type]
        return [s.action for s in plan.steps if s.visible]

    def xml(self, name: str) -> ET.Element:
        return ET.fromstring(self.dom(name).XMLDesc(testdriver.INACTIVE))

    def phase(self, key: ObjectKey) -> str | None:
        install = self.status(key).details.get("install")
        return install["phase"] if install else None

    def installed(self, key: ObjectKey) -> tuple[str, str] | None:
        cond = self.status(key).condition("Installed")
        return (cond.status, cond.reason) if cond is not None else None

    def guest_powers_off(self, name: str) -> None:
        """The guest shuts itself off (state reason "shutdown"), as an installer does."""
        self.dom(name).shutdown()


@pytest.fixture
def world(tmp_path: Path, conn: Any) -> Iterator[World]:
    with testdriver.domain_world(tmp_path, conn) as (w, reconciler, root):
        yield World(w.prefix, conn, w.store, w.hv, w.clock, reconciler, root)


def installer(root: Path, layout: tuple[str, str] = installer_media.LAYOUTS[0]) -> Path:
    kernel, initrd = layout
    return installer_iso.write(root / "installer.iso", {kernel: KERNEL, initrd: INITRD})


def disk(world: World, name: str) -> dict[str, Any]:
    return {"path": str(world.root / f"{name}.qcow2"), "size": "16Mi"}


def test_a_cdrom_install_boots_the_installer_then_the_disk_and_never_again(world: World) -> None:
    name = world.name("cd")
    iso = installer(world.root)
    key = world.apply(name, install={"cdrom": str(iso)}, disks=[disk(world, name)])
    world.reconcile(key)

    # Installing: the ISO is a cdrom after the disk, booted first; a reboot ends the install.
    config = world.config(name)
    assert [(d.path, d.device) for d in config.disks] == [
        (str(world.root / f"{name}.qcow2"), "disk"),
        (str(iso), "cdrom"),
    ]
    assert config.boot == ("cdrom", "hd")
    assert world.xml(name).findtext("on_reboot") == "destroy"
    assert world.running(name)
    assert world.phase(key) == "Installing"
    assert world.installed(key) == ("False", "Installing")

    # A reconcile during the install changes nothing.
    assert world.plan_actions(key) == []

    # The installer powers the guest off: media removed, booted from its disk.
    world.guest_powers_off(name)
    world.reconcile(key)
    config = world.config(name)
    assert [d.device for d in config.disks] == ["disk"]
    assert config.boot == ("hd",)
    assert world.xml(name).findtext("on_reboot") == "restart"
    assert world.running(name)
    assert world.phase(key) == "Installed"
    assert world.installed(key) == ("True", "Installed")
    assert "InstallEnded" in world.reasons(key)
    assert world.status(key).condition("Ready").status == "True"  # type: ignore[union-attr]

    # The installed guest powers off: runStrategy Always starts it again, from its disk.
    world.guest_powers_off(name)
    world.reconcile(key)
    assert world.running(name)
    assert [d.device for d in world.config(name).disks] == ["disk"]

    # A change of the install section later is not drift: nothing to do, no reinstall.
    other = installer_iso.write(world.root / "other.iso", {"isolinux/vmlinuz": b"k"})
    world.apply(name, install={"cdrom": str(other)}, disks=[disk(world, name)])
    assert world.plan_actions(key) == []
    world.reconcile(key)
    assert world.status(key).drift == ()
    assert world.phase(key) == "Installed"


def test_a_location_iso_install_boots_its_kernel_with_the_extra_args(world: World) -> None:
    name = world.name("loc")
    iso = installer(world.root)
    install = {"location": str(iso), "extraArgs": "console=ttyS0 priority=low"}
    key = world.apply(name, install=install)
    assert world.plan_actions(key)[:2] == ["extract-installer", "create"]
    kernel = world.root / f"{name}-install-vmlinuz"
    initrd = world.root / f"{name}-install-initrd"
    assert not kernel.exists()  # a plan makes nothing

    world.reconcile(key)
    assert kernel.read_bytes() == KERNEL
    assert initrd.read_bytes() == INITRD
    config = world.config(name)
    assert (config.kernel, config.initrd, config.cmdline) == (
        str(kernel),
        str(initrd),
        "console=ttyS0 priority=low",
    )
    assert world.status(key).details["install"]["files"] == [str(kernel), str(initrd)]
    assert world.plan_actions(key) == []

    world.guest_powers_off(name)
    world.reconcile(key)
    config = world.config(name)
    assert (config.kernel, config.initrd, config.cmdline) == (None, None, None)
    assert not kernel.exists() and not initrd.exists()  # kvmrec's copies, deleted
    assert iso.exists()  # the operator's media are left alone
    assert world.phase(key) == "Installed"
    assert "files" not in world.status(key).details["install"]
    assert world.running(name)
    assert world.plan_actions(key) == []


@pytest.mark.parametrize("layout", installer_media.LAYOUTS, ids=lambda x: x[0].split("/")[0])
def test_the_kernel_and_initrd_are_found_where_each_distribution_keeps_them(
    tmp_path: Path, layout: tuple[str, str]
) -> None:
    iso = installer(tmp_path, layout)
    found = installer_media.find_in_iso(str(iso))
    assert (found.kernel, found.initrd) == layout
    target = tmp_path / "k"
    installer_media.extract(str(iso), {layout[1]: str(target)})
    assert target.read_bytes() == INITRD
    assert installer_media.same(str(iso), layout[1], str(target))
    assert not installer_media.same(str(iso), layout[0], str(target))


def test_an_iso_without_an_installer_kernel_is_a_clear_error(world: World) -> None:
    name = world.name("nok")
    iso = installer_iso.write(world.root / "data.iso", {"docs/readme.txt": b"no kernel here"})
    key = world.apply(name, install={"location": str(iso)})
    plan = world.reconciler.plan(world.store.get(key))  # type: ignore[arg-type]
    assert plan.blocked_reason == "InstallMediaUnusable"
    assert plan.blocked is not None and "no installer kernel and initrd" in plan.blocked
    assert "install.amd/vmlinuz" in plan.blocked
    with pytest.raises(PermanentError):
        world.reconcile(key)
    assert not world.exists(name)


def test_a_location_tree_boots_the_files_in_it(world: World) -> None:
    name = world.name("tree")
    tree = world.root / "fedora"
    (tree / "images" / "pxeboot").mkdir(parents=True)
    (tree / "images" / "pxeboot" / "vmlinuz").write_bytes(KERNEL)
    (tree / "images" / "pxeboot" / "initrd.img").write_bytes(INITRD)
    key = world.apply(name, install={"location": str(tree), "extraArgs": "inst.text"})
    world.reconcile(key)
    config = world.config(name)
    assert config.kernel == str(tree / "images" / "pxeboot" / "vmlinuz")
    assert config.initrd == str(tree / "images" / "pxeboot" / "initrd.img")
    assert config.cmdline == "inst.text"
    world.guest_powers_off(name)
    world.reconcile(key)
    assert world.config(name).kernel is None
    assert (tree / "images" / "pxeboot" / "vmlinuz").exists()  # the tree is the operator's


def test_a_restart_of_kvmrec_mid_install_resumes_it_and_after_it_never_reinstalls(
    world: World,
) -> None:
    name = world.name("rs")
    iso = installer(world.root)
    key = world.apply(name, install={"location": str(iso), "extraArgs": "console=ttyS0"})
    world.reconcile(key)
    kernel = str(world.root / f"{name}-install-vmlinuz")

    world.restart_kvmrec()
    world.reconcile(key)
    assert world.config(name).kernel == kernel  # still the installer
    assert world.phase(key) == "Installing"
    # The installer crashes (destroyed, not its own power off): it boots the installer again.
    world.dom(name).destroy()
    world.reconcile(key)
    assert world.running(name) and world.config(name).kernel == kernel
    assert world.phase(key) == "Installing"

    world.restart_kvmrec()
    world.guest_powers_off(name)
    world.reconcile(key)
    assert world.phase(key) == "Installed"
    assert world.config(name).kernel is None

    world.restart_kvmrec()
    world.dom(name).destroy()
    world.reconcile(key)
    assert world.running(name)
    assert world.config(name).kernel is None
    assert world.phase(key) == "Installed"


def test_a_domain_defined_before_an_install_began_counts_as_installed(world: World) -> None:
    name = world.name("ex")
    key = world.apply(name)
    world.reconcile(key)
    iso = installer(world.root)
    world.apply(name, install={"cdrom": str(iso)})
    world.reconcile(key)
    assert [d.path for d in world.config(name).disks] == []
    assert world.installed(key) == ("True", "Existing")


def test_removing_install_during_the_install_calls_it_off(world: World) -> None:
    name = world.name("off")
    iso = installer(world.root)
    key = world.apply(name, install={"location": str(iso)})
    world.reconcile(key)
    kernel = world.root / f"{name}-install-vmlinuz"
    assert kernel.exists()
    world.apply(name)
    world.reconcile(key)
    assert not kernel.exists()
    assert "install" not in world.status(key).details
    assert world.config(name).kernel is None
    assert world.installed(key) == ("False", "CalledOff")

    # A cdrom install called off: nothing to delete, the phase is dropped all the same.
    name = world.name("off-cd")
    key = world.apply(name, install={"cdrom": str(iso)})
    world.reconcile(key)
    assert world.config(name).boot == ("cdrom", "hd")
    world.apply(name)
    world.reconcile(key)
    assert world.config(name).disks == () and world.config(name).boot == ("hd",)
    assert "install" not in world.status(key).details
    assert world.installed(key) == ("False", "CalledOff")


def test_install_media_outside_the_disk_roots_are_refused(world: World, tmp_path: Path) -> None:
    outside = installer(tmp_path)
    for field in ("cdrom", "location"):
        name = world.name(field)
        key = world.apply(name, install={field: str(outside)})
        plan = world.reconciler.plan(world.store.get(key))  # type: ignore[arg-type]
        assert plan.blocked_reason == "DiskPathNotAllowed"
        assert plan.blocked is not None and f"spec.install.{field}" in plan.blocked
        assert "outside the disk roots" in plan.blocked
        with pytest.raises(PermanentError):
            world.reconcile(key)
        assert not world.exists(name)

    # A tree under the roots whose kernel is a symlink out of them.
    tree = world.root / "tree" / "casper"
    tree.mkdir(parents=True)
    (tmp_path / "vmlinuz").write_bytes(KERNEL)
    os.symlink(tmp_path / "vmlinuz", tree / "vmlinuz")
    (tree / "initrd").write_bytes(INITRD)
    name = world.name("link")
    key = world.apply(name, install={"location": str(world.root / "tree")})
    plan = world.reconciler.plan(world.store.get(key))  # type: ignore[arg-type]
    assert plan.blocked_reason == "DiskPathNotAllowed"
    assert plan.blocked is not None and "through a symlink" in plan.blocked


def test_a_file_at_the_kernel_target_that_kvmrec_did_not_copy_is_left_alone(
    world: World,
) -> None:
    name = world.name("own")
    iso = installer(world.root)
    kernel = world.root / f"{name}-install-vmlinuz"
    kernel.write_bytes(b"someone else's file")
    key = world.apply(name, install={"location": str(iso)})
    with pytest.raises(PermanentError):
        world.reconcile(key)
    assert kernel.read_bytes() == b"someone else's file"
    assert world.status(key).condition("Ready").reason == "InstallMediaUnusable"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("install", "message"),
    [
        ({"cdrom": "/a.iso", "location": "/b.iso"}, "needs either cdrom or location"),
        ({}, "needs either cdrom or location"),
        ({"cdrom": "/a.iso", "extraArgs": "x"}, "goes with location"),
        ({"location": "/var/lib/libvirt/images/../x.iso"}, "must not contain '..'"),
        ({"location": "relative.iso"}, "is not an absolute path"),
    ],
)
def test_a_bad_install_section_names_its_field(install: dict[str, Any], message: str) -> None:
    document = {
        "apiVersion": "kvmrec.io/v1alpha1",
        "kind": "Domain",
        "metadata": {"name": "bad"},
        "spec": {"memory": "64Mi", "install": install},
    }
    with pytest.raises(ManifestError) as caught:
        parse_file("bad.yaml", yaml.safe_dump(document).encode())
    assert "spec.install" in str(caught.value)
    assert message in str(caught.value)


def test_describe_says_an_installing_guest_waits_for_its_installer() -> None:
    obj = {
        "conditions": [],
        "details": {"install": {"phase": "Installing", "since": "2026-01-01T00:00:00+00:00"}},
        "lastError": None,
        "retries": 0,
        "deleting": False,
    }
    assert describe.waiting_for(obj) == [
        "the installer to power the guest off (then it boots from its disk)"
    ]
    obj["details"] = {"install": {"phase": "Installed", "since": "2026-01-01T00:00:00+00:00"}}
    assert describe.waiting_for(obj) == []


def test_deleting_a_domain_mid_install_deletes_the_kernel_and_initrd_kvmrec_copied(
    world: World,
) -> None:
    name = world.name("del")
    iso = installer(world.root)
    key = world.apply(name, install={"location": str(iso)})
    world.reconcile(key)
    kernel = world.root / f"{name}-install-vmlinuz"
    initrd = world.root / f"{name}-install-initrd"
    assert kernel.exists() and initrd.exists()
    world.dom(name).destroy()  # else the deletion first waits for a clean power off
    world.store.mark_deleting(key, world.clock.wall())
    world.reconcile(key)
    assert not world.exists(name)
    assert not kernel.exists() and not initrd.exists()
    assert iso.exists()
