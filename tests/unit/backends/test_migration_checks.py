"""What a guest's definition says about migrating it: local cdroms block, local disks
need copy storage (and are listed to be made at the target), shared paths pass, the CPU
mode is read."""

from __future__ import annotations

from kvmrec.backends import migration_checks

SHARED = ["/srv/shared"]


def domain(devices: str, cpu: str = "") -> str:
    return f"<domain type='kvm'><name>g</name>{cpu}<devices>{devices}</devices></domain>"


def disk(path: str, dev: str = "vda", device: str = "disk", fmt: str = "qcow2") -> str:
    return (
        f"<disk type='file' device='{device}'><driver name='qemu' type='{fmt}'/>"
        f"<source file='{path}'/><target dev='{dev}'/></disk>"
    )


def test_a_cdrom_on_a_local_path_blocks_even_with_copy_storage() -> None:
    xml = domain(disk("/var/lib/libvirt/images/boot.iso", "sda", "cdrom", "raw"))
    for copy in (False, True):
        check = migration_checks.disks(xml, SHARED, copy_storage=copy)
        assert check.blockers == (
            "cdrom sda uses /var/lib/libvirt/images/boot.iso, a local path the target lacks",
        )


def test_a_local_disk_needs_copy_storage_and_is_then_listed() -> None:
    xml = domain(disk("/var/lib/libvirt/images/g.qcow2") + disk("/srv/shared/d.qcow2", "vdb"))
    without = migration_checks.disks(xml, SHARED, copy_storage=False)
    assert len(without.blockers) == 1 and "--copy-storage" in without.blockers[0]
    copied = migration_checks.disks(xml, SHARED, copy_storage=True)
    assert copied.blockers == ()
    assert copied.local == (
        migration_checks.LocalDisk("vda", "/var/lib/libvirt/images/g.qcow2", "qcow2"),
    )


def test_disks_and_cdroms_on_shared_storage_pass() -> None:
    xml = domain(disk("/srv/shared/g.qcow2") + disk("/srv/shared/x.iso", "sda", "cdrom"))
    check = migration_checks.disks(xml, SHARED, copy_storage=False)
    assert check == migration_checks.DiskCheck((), ())
    # A path that only starts like a shared one is not under it.
    assert migration_checks.disks(
        domain(disk("/srv/shared-not/g.qcow2")), SHARED, copy_storage=False
    ).blockers


def test_whether_a_disk_is_on_shared_storage() -> None:
    assert migration_checks.on_shared(domain(disk("/srv/shared/g.qcow2")), SHARED)
    assert not migration_checks.on_shared(domain(disk("/var/lib/libvirt/images/g.qcow2")), SHARED)
    assert not migration_checks.on_shared(domain(""), SHARED)


def test_the_cpu_mode() -> None:
    assert migration_checks.cpu_mode(domain("")) is None
    assert migration_checks.cpu_mode(domain("", "<cpu mode='host-passthrough'/>")) == (
        "host-passthrough"
    )
    assert migration_checks.cpu_mode(domain("", "<cpu><model>Haswell</model></cpu>")) == "custom"
