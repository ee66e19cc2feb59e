"""The lab's shared lockspace: a disk runs on one host at a time.

On the shared storage a second start of the same image on another host is refused (on
one machine QEMU's own image lock usually refuses it before libvirt's lease is asked).
To prove the lease itself, each host gets an image of its own at the same path (its own
/var/lib/libvirt/images): different files, so QEMU's lock cannot conflict, but the same
path, and virtlockd's lease is keyed by the path in the lockspace every host shares.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from support.lab import Lab, LabGuests

pytestmark = pytest.mark.integration


def make_qcow2(path: Path) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"], check=True)
    return path


# The disks' fixtures come before lab_guests: torn down after the guests are gone.
def test_a_shared_disk_cannot_start_on_a_second_host(
    shared_dir: Path, lab_guests: LabGuests
) -> None:
    disk = make_qcow2(shared_dir / "disk.qcow2")
    first = lab_guests.start("lab1", "a", disk)
    second = lab_guests.define("lab2", "b", disk)
    with pytest.raises(libvirt.libvirtError, match="lock"):
        second.create()
    assert not second.isActive()
    assert first.isActive()
    first.destroy()
    second.create()  # released: the other host may take it now
    assert second.isActive()


@pytest.fixture
def same_path_images(lab: Lab, prefix: str) -> Iterator[str]:
    """An image of its own on lab1 and on lab2, both at /var/lib/libvirt/images/PREFIX.qcow2
    inside the hosts."""
    name = f"{prefix}.qcow2"
    images = [make_qcow2(lab.local_images(host) / name) for host in ("lab1", "lab2")]
    yield f"/var/lib/libvirt/images/{name}"
    for image in images:
        image.unlink(missing_ok=True)


def test_the_lease_refuses_the_same_disk_path_on_another_host(
    lab: Lab, same_path_images: str, lab_guests: LabGuests
) -> None:
    one, two = (lab.local_images(h) / Path(same_path_images).name for h in ("lab1", "lab2"))
    assert one.stat().st_ino != two.stat().st_ino  # two files: no QEMU lock between them
    first = lab_guests.start("lab1", "a", same_path_images)
    second = lab_guests.define("lab2", "b", same_path_images)
    lease = hashlib.sha256(same_path_images.encode()).hexdigest()
    with pytest.raises(libvirt.libvirtError, match=f"Lockspace resource '{lease}' is locked"):
        second.create()
    assert not second.isActive()
    first.destroy()
    second.create()
    assert second.isActive()
