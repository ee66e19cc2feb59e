"""Disk images on the host file system, through ``qemu-img``.

libvirt's storage API needs a pool around every image; operators mostly name plain paths,
so path disks are made here with ``qemu-img`` (always as an argument list, never a shell
line built from manifest text): created with a size, as a qcow2 overlay on a base image (a
linked clone), or as a full independent copy of another image (a clone); grown, never
shrunk; deleted only when a disk's own deletionPolicy asks.

A running guest holds a write lock on its images: reads use ``--force-share`` and growing
an image in use goes through libvirt (``virDomainBlockResize``) instead.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

QEMU_IMG = "qemu-img"
_TIMEOUT = 600  # a full copy of a large image takes a while; a hung NFS mount should not hang us


class ImageError(Exception):
    """qemu-img failed; the message carries its own."""


def _run(*args: str) -> str:
    try:
        done = subprocess.run(
            [QEMU_IMG, *args], capture_output=True, text=True, timeout=_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ImageError(f"qemu-img {args[0]}: {exc}") from exc
    if done.returncode != 0:
        raise ImageError(f"qemu-img {args[0]}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def exists(path: str) -> bool:
    return os.path.exists(path)


def info(path: str) -> dict[str, object]:
    """``qemu-img info`` as a dict (format, virtual-size, backing-filename, ...)."""
    data = json.loads(_run("info", "--force-share", "--output=json", path))
    if not isinstance(data, dict):
        raise ImageError(f"qemu-img info {path}: unexpected output")
    return data


def virtual_size(path: str) -> int:
    size = info(path).get("virtual-size")
    if not isinstance(size, int):
        raise ImageError(f"qemu-img info {path}: no virtual size")
    return size


def create(path: str, fmt: str, size: int) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    _run("create", "-q", "-f", fmt, path, str(size))


def create_overlay(path: str, base: str, size: int | None) -> None:
    """A qcow2 image whose unwritten blocks read from ``base`` (which is never written)."""
    base_format = str(info(base).get("format", "raw"))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    args = ["create", "-q", "-f", "qcow2", "-F", base_format, "-b", base, path]
    if size is not None:
        args.append(str(size))
    _run(*args)


def copy(source: str, path: str, fmt: str) -> None:
    """A full copy of ``source`` (its backing chain flattened): nothing shared with it."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    partial = f"{path}.kvmrec-partial"
    _run("convert", "-q", "-U", "-O", fmt, source, partial)
    # Renamed into place only when complete, so a crash mid-copy never leaves a half image
    # under the name the domain uses.
    os.replace(partial, path)


def grow(path: str, size: int) -> None:
    """Grow an image that no running guest holds."""
    _run("resize", "-q", path, str(size))


def delete(path: str) -> None:
    Path(path).unlink(missing_ok=True)
