"""cloud-init NoCloud seeds: ISO 9660 volumes labelled ``cidata``, made and read with pycdlib.

What ``cloud-localds`` makes with genisoimage, made in-process instead (no shell-out, no
tool to install): the volume label ``cidata`` cloud-init looks for, Rock Ridge and Joliet
names (``user-data``, ``meta-data``, ``network-config``) beside the plain ISO 9660 ones.
The volume's application identifier carries kvmrec's stamp for the domain, so a file at
the seed's path is only ever replaced or deleted when kvmrec made it for that domain.

A seed is written to a temporary file next to its path and renamed over it: a running
QEMU keeps reading the seed it opened, and a crash leaves either seed whole.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

LABEL = "cidata"


class SeedError(Exception):
    """A seed could not be read or written."""


def stamp(domain: str) -> str:
    """The application identifier of the seeds kvmrec makes for ``domain``."""
    return f"kvmrec Domain/{domain} cloud-init seed"


def digest(files: Mapping[str, bytes]) -> str:
    """A digest of a seed's content: its file names and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + str(len(files[name])).encode() + b"\0")
        h.update(files[name])
    return h.hexdigest()


def _iso_name(name: str) -> str:
    return "/" + name.upper().replace("-", "_") + ".;1"


def write(path: str, domain: str, files: Mapping[str, bytes]) -> None:
    """Make the seed of ``domain`` at ``path`` holding ``files`` (name -> bytes)."""
    iso = pycdlib.PyCdlib()
    iso.new(
        interchange_level=3,
        vol_ident=LABEL,
        app_ident_str=stamp(domain),
        joliet=3,
        rock_ridge="1.09",
    )
    for name in sorted(files):
        data = files[name]
        iso.add_fp(
            io.BytesIO(data), len(data), _iso_name(name), rr_name=name, joliet_path="/" + name
        )
    directory = os.path.dirname(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".kvmrec-seed-", suffix=".iso", dir=directory)
    except OSError as exc:
        iso.close()
        raise SeedError(f"{path}: cannot write the seed ({exc.strerror or exc})") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            iso.write_fp(out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise SeedError(f"{path}: cannot write the seed ({exc.strerror or exc})") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        iso.close()


def read(path: str) -> tuple[str, dict[str, bytes]]:
    """The application identifier and the files (Rock Ridge names) of the ISO at ``path``."""
    iso = pycdlib.PyCdlib()
    try:
        iso.open(path)
    except (PyCdlibException, OSError) as exc:
        raise SeedError(f"{path}: not an ISO 9660 image ({exc})") from exc
    try:
        ident = iso.pvd.application_identifier.text.decode(errors="replace").rstrip()
        files: dict[str, bytes] = {}
        for child in iso.list_children(iso_path="/"):
            if not child.is_file() or child.rock_ridge is None:
                continue
            name = child.rock_ridge.name().decode(errors="replace")
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path="/" + name)
            files[name] = out.getvalue()
        return ident, files
    except PyCdlibException as exc:
        raise SeedError(f"{path}: cannot read the ISO 9660 image ({exc})") from exc
    finally:
        iso.close()


def owned(path: str, domain: str) -> bool:
    """``path`` is a seed kvmrec made for ``domain``."""
    try:
        ident, _ = read(path)
    except SeedError:
        return False
    return ident == stamp(domain)
