"""Which git commit each manifest file is at, when the manifest directory is a git work tree.

GitOps hosts keep their manifests in git; recording the commit with every accepted revision
lets ``kvmrec history`` answer "which change brought this generation in". Only a file that
is committed as it is on disk gets the commit: one that is untracked, staged but not
committed, or modified since HEAD did not come from any commit, and says so by having none.
git is asked with argument lists (never a shell line), and any trouble (no git, not a work
tree, a repository owned by someone else) simply means "no commit".
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
    return done.stdout if done.returncode == 0 else None


def commits_of(root: Path) -> dict[str, str]:
    """HEAD's commit for every file under ``root`` (by its path relative to ``root``) that
    is committed and unchanged since; files missing from the answer have no commit."""
    head = (_git(root, "rev-parse", "--verify", "HEAD") or "").strip()
    if not head:
        return {}
    # Both list paths relative to ``root``: what the index holds, and what differs from
    # HEAD in the index or the work tree (staged, modified, deleted).
    tracked = _git(root, "ls-files", "-z", "--", ".")
    changed = _git(root, "diff", "HEAD", "--name-only", "--relative", "-z", "--", ".")
    if tracked is None or changed is None:
        return {}
    differ = set(changed.split("\0"))
    return {path: head for path in tracked.split("\0") if path and path not in differ}
