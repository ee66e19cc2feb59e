"""``kvmrec history`` on a manifest directory that is a git work tree, on the real stack.

A revision records the commit only when its file is committed as it is on disk: a file
that is untracked, or modified since the commit, has no commit. ``--diff`` shows what an
uncommitted edit changed.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from realstack import Controller, domain_manifest, wait_for

pytestmark = pytest.mark.integration


def _git(controller: Controller, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(controller.manifests), *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def _revisions(controller: Controller, name: str) -> list[dict[str, Any]]:
    done = controller.cli("history", f"Domain/{name}", "-o", "json")
    return list(json.loads(done.stdout)["revisions"]) if done.returncode == 0 else []


def test_history_shows_the_commit_only_for_committed_files(
    controller: Controller, prefix: str, stack: dict[str, str]
) -> None:
    kind = stack["KVMREC_DOMAIN_TYPE"]
    committed, untracked = f"{prefix}-committed", f"{prefix}-untracked"
    _git(controller, "init", "-q")
    _git(controller, "config", "user.email", "ops@example.com")
    _git(controller, "config", "user.name", "ops")
    controller.write("committed.yaml", domain_manifest(committed, kind, runStrategy="Halted"))
    _git(controller, "add", "committed.yaml")
    _git(controller, "commit", "-q", "-m", "one guest")
    head = _git(controller, "rev-parse", "HEAD")
    controller.write("untracked.yaml", domain_manifest(untracked, kind, runStrategy="Halted"))
    controller.start(resync=300)

    first = wait_for(lambda: _revisions(controller, committed), 30, "the committed revision")
    assert [(r["generation"], r["commit"]) for r in first] == [(1, head)]
    other = wait_for(lambda: _revisions(controller, untracked), 30, "the untracked revision")
    assert [(r["generation"], r["commit"]) for r in other] == [(1, None)]

    # Edited and not committed: the new revision has no commit, the old one keeps its own.
    edited = domain_manifest(committed, kind, runStrategy="Halted", autostart=True)
    controller.write("committed.yaml", edited)
    both = wait_for(
        lambda: len(r := _revisions(controller, committed)) == 2 and r, 30, "the edit's revision"
    )
    assert [(r["generation"], r["commit"]) for r in both] == [(1, head), (2, None)]
    table = controller.cli("history", f"Domain/{committed}").stdout.splitlines()
    assert table[2].split()[3] == head[:12] and table[3].split()[3] == "-"

    diff = controller.cli("history", f"domain/{committed}", "--diff")
    assert diff.returncode == 0, diff.stderr
    changed = [line for line in diff.stdout.splitlines()[2:] if line[:1] in "+-"]
    assert changed == ["-  autostart: false", "+  autostart: true"]
    assert f"generation 1 (committed.yaml, commit {head[:12]}," in diff.stdout
