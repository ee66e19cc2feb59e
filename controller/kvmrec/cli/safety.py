"""The options that say how far kvmrec trusts its input, shared by ``run``, ``plan`` and
``validate`` so that a dry run judges manifests and disk paths exactly as the service does.

    --insecure-manifests   load manifests that others than root could have written
    --disk-root DIR        where disk images may be (repeatable; replaces the defaults)
    --allow-device-disks   let a disk path be a block or character device
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kvmrec.settings import Settings


def add_insecure_manifests(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--insecure-manifests",
        action="store_true",
        help="load manifests even when someone other than root (or kvmrec's user) could "
        "have written them or their directories (off: refused, as sshd's StrictModes does)",
    )


def add_disk_options(parser: argparse.ArgumentParser) -> None:
    defaults = " and ".join(str(p) for p in Settings.disk_roots)
    parser.add_argument(
        "--disk-root",
        dest="disk_roots",
        action="append",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"disk images may only be under DIR; repeat for several (default {defaults})",
    )
    parser.add_argument(
        "--allow-device-disks",
        action="store_true",
        help="let a disk path (under a disk root) be a block or character device",
    )


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """The ``Settings`` fields these options set, for the options the command has."""
    found: dict[str, Any] = {}
    if hasattr(args, "insecure_manifests"):
        found["insecure_manifests"] = args.insecure_manifests
    if hasattr(args, "disk_roots"):
        found["disk_roots"] = tuple(args.disk_roots or Settings.disk_roots)
        found["allow_device_disks"] = args.allow_device_disks
    return found
