"""Which files a Domain may use as disks: only images under the configured disk roots.

kvmrec runs as root. A disk path in a manifest is a file that QEMU opens for the guest,
that kvmrec creates, copies from and grows with ``qemu-img`` (and deletes, when a disk's
deletionPolicy asks): a manifest naming ``/etc/shadow``, another guest's image or ``/dev/sda``
would hand the host's secrets or disks to a guest, and to whoever wrote the manifest. So
every path a Domain names, a disk's ``path``, its ``backingImage``, its ``cloneFrom.path``
(and the disk a ``cloneFrom.domain`` would be copied from), must:

- not contain ``..`` (the manifest parser refuses it too; checked again here because this
  is the rule that matters);
- lie under one of the disk roots (``--disk-root``; ``/var/lib/libvirt/images`` and
  ``/data/kvm`` by default) once the symlinks of the part of the path that exists are
  resolved, so a link in a root that leads out of it is refused, and a root that is itself
  a symlink (``/data/kvm`` -> ``/mnt/ssd``) works;
- not be a device node (block or character) unless ``--allow-device-disks``: raw LVM
  volumes are a real use, but an opt-in one, and their directory must still be a root.

The verdict is a property of the host at the moment of the check: a path that resolves
elsewhere later (a symlink changed under a root by someone who can write there) is caught
by the next reconcile, before anything is created from it again.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kvmrec.settings import Settings

__all__ = ["DiskPolicy", "own_file"]


@dataclass(frozen=True)
class DiskPolicy:
    """The disk roots, and whether device nodes are allowed under them."""

    roots: tuple[str, ...]
    allow_devices: bool = False

    @classmethod
    def of(cls, roots: Iterable[str | Path], allow_devices: bool = False) -> DiskPolicy:
        return cls(tuple(os.fspath(r) for r in roots), allow_devices)

    def describe_roots(self) -> str:
        return ", ".join(self.roots) if self.roots else "none configured"

    def problem(self, path: str) -> str | None:
        """Why ``path`` may not be used as a disk, or None when it may."""
        if not os.path.isabs(path):
            return f"{path} is not an absolute path"
        if ".." in path.split("/"):
            return f"{path} contains '..'"
        reasons: list[str] = []
        real = os.path.realpath(path)
        try:
            st = os.stat(real)
        except OSError:
            st = None  # does not exist (yet): only where it would be matters
        if st is not None and not self.allow_devices:
            if stat.S_ISBLK(st.st_mode):
                reasons.append("is a block device (device disks need --allow-device-disks)")
            elif stat.S_ISCHR(st.st_mode):
                reasons.append("is a character device (device disks need --allow-device-disks)")
        if not any(_inside(real, os.path.realpath(root)) for root in self.roots):
            via = f" (through a symlink, it is {real})" if real != os.path.normpath(path) else ""
            reasons.append(
                f"is outside the disk roots ({self.describe_roots()}){via}; "
                "allow its directory with --disk-root"
            )
        if not reasons:
            return None
        return f"{path} " + " and ".join(reasons)


def _inside(path: str, root: str) -> bool:
    """``path`` is below ``root`` (not the root itself: a disk is a file in it)."""
    return path.startswith(root.rstrip("/") + "/") and path != root


def own_file(policy: DiskPolicy | None, filename: str) -> str:
    """Where kvmrec keeps a file it makes for a domain (a seed, an installer's kernel): in
    the first disk root, next to the disks."""
    roots = policy.roots if policy is not None and policy.roots else ()
    root = roots[0] if roots else os.fspath(Settings.disk_roots[0])
    return os.path.join(root, filename)
