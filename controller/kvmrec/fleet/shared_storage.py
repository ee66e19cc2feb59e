"""Whether a host can run an HA Domain's disks: every file it opens is on storage the host
shares with the others (its ``shared_storage`` directories, as it registered them).

A guest restarted elsewhere must find the very same images there; a disk on a host's local
directory would start a blank or stale copy. Each disk's image and its backing image count
(a cdrom's file too); a pool's volume cannot be checked before a host resolves it, so the
manifest rules refuse it for an HA Domain.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable

from kvmrec.api.kinds import DomainSpec


def files(spec: DomainSpec) -> list[str]:
    """The host files an HA Domain's disks open."""
    found: list[str] = []
    for disk in spec.disks:
        found += [p for p in (disk.path, disk.backing_image) if p]
    return found


def unshared(spec: DomainSpec, shared: Iterable[str]) -> list[str]:
    """The files of ``spec`` not under one of the ``shared`` directories ([] for a Domain
    that is not HA)."""
    if spec.high_availability is None:
        return []
    roots = [posixpath.normpath(s) for s in shared]
    return [f for f in files(spec) if not any(_under(posixpath.normpath(f), r) for r in roots)]


def _under(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root.rstrip("/") + "/")
