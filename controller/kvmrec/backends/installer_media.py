"""An installer's kernel and initrd, found in an ISO or a directory tree, copied out of an ISO.

virt-install --location boots an installer's kernel directly; the distributions keep it
at well-known places of their media, tried in this order: ``install.amd/`` (Debian),
``casper/`` (Ubuntu), ``images/pxeboot/`` (Fedora, RHEL, CentOS), ``isolinux/``. An ISO is
read with pycdlib (Rock Ridge names, then Joliet, then plain ISO 9660 ones); a member is
written to a temporary file next to its target and renamed over it, so a target is only
ever absent or whole.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

# (kernel, initrd) relative to the media's root.
LAYOUTS: tuple[tuple[str, str], ...] = (
    ("install.amd/vmlinuz", "install.amd/initrd.gz"),
    ("casper/vmlinuz", "casper/initrd"),
    ("images/pxeboot/vmlinuz", "images/pxeboot/initrd.img"),
    ("isolinux/vmlinuz", "isolinux/initrd.img"),
)


class MediaError(Exception):
    """An installer's media could not be read, or its kernel copied out."""


@dataclass(frozen=True)
class Boot:
    """Where an installer's kernel and initrd are, relative to its media's root."""

    kernel: str
    initrd: str


def _layouts() -> str:
    return ", ".join(f"{k} + {i}" for k, i in LAYOUTS)


def find_in_tree(root: str) -> Boot:
    """The kernel and initrd of the installer tree in directory ``root``."""
    for kernel, initrd in LAYOUTS:
        if os.path.isfile(os.path.join(root, kernel)) and os.path.isfile(
            os.path.join(root, initrd)
        ):
            return Boot(kernel, initrd)
    raise MediaError(f"{root}: no installer kernel and initrd in it (looked for {_layouts()})")


def _open(path: str) -> pycdlib.PyCdlib:
    iso = pycdlib.PyCdlib()
    try:
        iso.open(path)
    except (PyCdlibException, OSError) as exc:
        raise MediaError(f"{path}: not an ISO 9660 image ({exc})") from exc
    return iso


def _lookup(iso: pycdlib.PyCdlib, member: str) -> dict[str, str] | None:
    """The keyword pycdlib reads ``member`` by (its Rock Ridge, Joliet or ISO 9660 name)."""
    candidates: list[dict[str, str]] = []
    if iso.has_rock_ridge():
        candidates.append({"rr_path": "/" + member})
    if iso.has_joliet():
        candidates.append({"joliet_path": "/" + member})
    candidates.append({"iso_path": "/" + member.upper() + ";1"})
    for where in candidates:
        try:
            record = iso.get_record(**where)
        except PyCdlibException:
            continue
        if record.is_file():
            return where
    return None


def find_in_iso(path: str) -> Boot:
    """The kernel and initrd of the installer ISO at ``path``."""
    iso = _open(path)
    try:
        for kernel, initrd in LAYOUTS:
            if _lookup(iso, kernel) is not None and _lookup(iso, initrd) is not None:
                return Boot(kernel, initrd)
    finally:
        iso.close()
    raise MediaError(f"{path}: no installer kernel and initrd in it (looked for {_layouts()})")


def extract(path: str, members: dict[str, str]) -> None:
    """Copy each member of the ISO at ``path`` to its target (member -> target path)."""
    iso = _open(path)
    try:
        for member, target in members.items():
            where = _lookup(iso, member)
            if where is None:
                raise MediaError(f"{path}: has no {member}")
            _write(iso, where, target)
    finally:
        iso.close()


def _write(iso: pycdlib.PyCdlib, where: dict[str, str], target: str) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=".kvmrec-installer-", dir=os.path.dirname(target))
    except OSError as exc:
        raise MediaError(f"{target}: cannot write it ({exc.strerror or exc})") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            iso.get_file_from_iso_fp(out, **where)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except (OSError, PyCdlibException) as exc:
        Path(tmp).unlink(missing_ok=True)
        raise MediaError(f"{target}: cannot write it ({exc})") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def same(path: str, member: str, target: str) -> bool:
    """``target`` holds exactly the bytes of ``member`` of the ISO at ``path``."""
    iso = _open(path)
    try:
        where = _lookup(iso, member)
        if where is None:
            return False
        wanted = hashlib.sha256()

        class _Sink:
            def write(self, data: bytes) -> int:
                wanted.update(data)
                return len(data)

        iso.get_file_from_iso_fp(cast(BinaryIO, _Sink()), **where)
    finally:
        iso.close()
    have = hashlib.sha256()
    try:
        with open(target, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                have.update(chunk)
    except OSError:
        return False
    return have.digest() == wanted.digest()
