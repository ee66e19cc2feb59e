"""Who may have written a file kvmrec acts on: root or kvmrec's own user, and nobody else.

kvmrec runs as root and does what its manifests (sources/trust.py) and its configuration
file (kvmrec/config.py) say, so both are judged by this one rule, as sshd's StrictModes
judges ``authorized_keys``: owned by root or the user kvmrec runs as, and writable by
neither group nor others. The reason names the fix; a caller with a way to waive the check
(``--insecure-manifests``) has it named too.
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Collection

__all__ = ["trusted_owners", "verdict"]


def trusted_owners() -> frozenset[int]:
    """Root, and the user this process runs as."""
    return frozenset({0, os.geteuid()})


def _user(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def verdict(
    uid: int, mode: int, owners: Collection[int] | None = None, *, override: str | None = None
) -> str | None:
    """Why a file or directory with this owner and mode cannot be trusted, fix included
    (and ``override``, the flag that waives the check, if there is one); None when it can.
    ``owners``: the uids trusted to own it, :func:`trusted_owners` by default."""
    owners = trusted_owners() if owners is None else owners
    waive = f", or run with {override}" if override else ""
    if uid not in owners:
        trusted = " or ".join("root" if o == 0 else _user(o) for o in sorted(owners))
        return f"owned by {_user(uid)}, not by {trusted}; fix with chown{waive}"
    # Others is the worse news (anyone at all); the mode shows the whole story.
    writer = "others" if mode & stat.S_IWOTH else "group" if mode & stat.S_IWGRP else None
    if writer is not None:
        return f"writable by {writer} (mode {stat.S_IMODE(mode):04o}); fix with chmod go-w{waive}"
    return None
