"""History: revisions with their git commit, reconciles, events, and pruning."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kvmrec.api import manifests
from kvmrec.api.kinds import ObjectKey
from kvmrec.cli.main import main
from kvmrec.sources import git
from kvmrec.store.records import ReconcileRecord
from kvmrec.store.sqlite import SqliteStore

KEY = ObjectKey("Domain", "web")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def manifest(vcpus: int) -> manifests.Manifest:
    text = (
        "apiVersion: kvmrec.io/v1alpha1\nkind: Domain\nmetadata: {name: web}\n"
        f"spec: {{memory: 64Mi, vcpus: {vcpus}}}\n"
    )
    return manifests.parse_file("web.yaml", text.encode())[0]


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    store.apply_many([manifest(1)], T0, "a" * 40)
    store.apply_many([manifest(2)], T0 + timedelta(days=10), "b" * 40 + "+dirty")
    store.record_reconcile(ReconcileRecord(KEY, T0, 0.25, "ok"))
    store.record_reconcile(ReconcileRecord(KEY, T0 + timedelta(days=10), 0.0, "error", "boom"))
    store.add_event(KEY, "Normal", "Started", "started the guest", T0)
    store.close()
    return path


def test_history_lists_revisions_with_commits_and_reconciles(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["history", "Domain/web", "--state", str(state), "-o", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert [(r["generation"], r["commit"], r["source"]) for r in body["revisions"]] == [
        (1, "a" * 40, "web.yaml"),
        (2, "b" * 40 + "+dirty", "web.yaml"),
    ]
    assert [(r["result"], r["message"]) for r in body["reconciles"]] == [
        ("ok", None),
        ("error", "boom"),
    ]
    assert main(["history", "Domain/web", "--state", str(state)]) == 0
    table = capsys.readouterr().out
    assert "aaaaaaaaaaaa" in table and "250 ms" in table and "boom" in table


def test_history_of_an_unknown_object_says_so(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["history", "Domain/nope", "--state", str(state)]) == 1
    assert "nothing recorded" in capsys.readouterr().err


def test_events_filter_by_object(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["events", "Domain/web", "--state", str(state), "-o", "json"]) == 0
    events = json.loads(capsys.readouterr().out)["events"]
    assert [(e["object"], e["reason"]) for e in events] == [("Domain/web", "Started")]
    assert main(["events", "Domain/other", "--state", str(state), "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["events"] == []
    assert main(["events", "--state", str(state / "missing")]) == 1


def test_pruning_keeps_the_newest_revision_of_each_object(state: Path) -> None:
    store = SqliteStore(state)
    try:
        removed = store.prune_history(T0 + timedelta(days=20))
        assert removed == 1 + 2 + 1  # one event, two reconciles, the older revision
        assert [r.generation for r in store.revisions(KEY)] == [2]
        assert store.reconciles(KEY) == []
        assert store.events(KEY) == []
    finally:
        store.close()


def test_git_commit_of_a_manifest_directory(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    assert git.commit_of(repo) is None, "not a work tree"

    def run(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    run("init", "-q")
    run("config", "user.email", "ops@example.com")
    run("config", "user.name", "ops")
    (repo / "web.yaml").write_text("a: 1\n")
    run("add", "web.yaml")
    run("commit", "-q", "-m", "web")
    head = run("rev-parse", "HEAD")
    assert git.commit_of(repo) == head
    (repo / "web.yaml").write_text("a: 2\n")
    assert git.commit_of(repo) == f"{head}+dirty"
