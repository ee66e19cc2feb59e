"""Which git commit the manifest directory is at, when it is a git work tree.

GitOps hosts keep their manifests in git; recording the commit with every accepted revision
lets ``kvmrec history`` answer "which change brought this generation in". git is asked with
argument lists (never a shell line), and any trouble (no git, not a work tree, a repository
owned by someone else) simply means "no commit".
"""

from __future__ import annotations

import subprocess
from pathlib import Path

_TIMEOUT = 5.0


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def commit_of(root: Path) -> str | None:
    """HEAD's commit, with ``+dirty`` when files under ``root`` differ from it."""
    head = _git(root, "rev-parse", "--verify", "HEAD")
    if not head:
        return None
    changes = _git(root, "status", "--porcelain", "--", ".")
    return f"{head}+dirty" if changes else head
