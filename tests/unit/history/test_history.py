"""History: revisions with their git commit, reconciles, events, and pruning."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kvmrec import store as stores
from kvmrec.api import manifests
from kvmrec.api.kinds import ObjectKey
from kvmrec.cli.main import main
from kvmrec.sources import git
from kvmrec.store.records import ReconcileRecord

KEY = ObjectKey("Domain", "web")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def manifest(vcpus: int, extra: str = "") -> manifests.Manifest:
    text = (
        "apiVersion: kvmrec.io/v1alpha1\nkind: Domain\nmetadata: {name: web}\n"
        f"spec: {{memory: 64Mi, vcpus: {vcpus}{', ' + extra if extra else ''}}}\n"
    )
    return manifests.parse_file("web.yaml", text.encode())[0]


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state.db"
    store = stores.open(path)
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
    store = stores.open(state)
    try:
        removed = store.prune_history(T0 + timedelta(days=20))
        assert removed == 1 + 2 + 1  # one event, two reconciles, the older revision
        assert [r.generation for r in store.revisions(KEY)] == [2]
        assert store.reconciles(KEY) == []
        assert store.events(KEY) == []
    finally:
        store.close()


def test_git_commit_only_for_files_committed_as_they_are(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    manifests_dir = repo / "hosts" / "h1"  # the manifest directory deep in the work tree
    manifests_dir.mkdir(parents=True)
    assert git.commits_of(manifests_dir) == {}, "not a work tree"

    def run(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    run("init", "-q")
    run("config", "user.email", "ops@example.com")
    run("config", "user.name", "ops")
    assert git.commits_of(manifests_dir) == {}, "no commit yet"
    for name in ("web.yaml", "db.yaml", "team/app.yaml", "staged.yaml"):
        (manifests_dir / name).parent.mkdir(exist_ok=True)
        (manifests_dir / name).write_text("a: 1\n")
    run("add", "hosts/h1/web.yaml", "hosts/h1/db.yaml", "hosts/h1/team/app.yaml")
    run("commit", "-q", "-m", "web")
    head = run("rev-parse", "HEAD")
    run("add", "hosts/h1/staged.yaml")  # staged, not committed
    (manifests_dir / "db.yaml").write_text("a: 2\n")  # modified since the commit
    (manifests_dir / "new.yaml").write_text("a: 1\n")  # untracked
    assert git.commits_of(manifests_dir) == {"web.yaml": head, "team/app.yaml": head}


def test_history_shows_a_commit_only_where_the_file_had_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "state.db"
    store = stores.open(path)
    store.apply_many([manifest(1)], T0, {"web.yaml": "a" * 40})
    store.apply_many([manifest(2)], T0 + timedelta(days=1), {"other.yaml": "b" * 40})
    store.apply_many([manifest(3)], T0 + timedelta(days=2), "c" * 40 + "+dirty")  # older kvmrec
    store.close()
    assert main(["history", "Domain/web", "--state", str(path), "-o", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert [r["commit"] for r in body["revisions"]][:2] == ["a" * 40, None]
    assert main(["history", "Domain/web", "--state", str(path)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:5]]
    assert [row[3] for row in rows] == ["aaaaaaaaaaaa", "-", "-"]


def test_history_diff_between_revisions(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = stores.open(state)
    store.apply_many([manifest(2, "autostart: true")], T0 + timedelta(days=11), "d" * 40)
    store.close()
    assert main(["history", "domain/web", "--state", str(state), "--diff"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("--- Domain/web generation 2 (web.yaml, 2026-01-11T00:00:00Z)")
    assert lines[1].startswith("+++ Domain/web generation 3 (web.yaml, commit dddddddddddd, ")
    assert [line for line in lines[2:] if line[:1] in "+-"] == [
        "-  autostart: false",
        "+  autostart: true",
    ]
    assert main(["history", "Domain/web", "--state", str(state), "--diff", "1", "3"]) == 0
    changed = [line for line in capsys.readouterr().out.splitlines()[2:] if line[:1] in "+-"]
    assert changed == ["-  autostart: false", "+  autostart: true", "-  vcpus: 1", "+  vcpus: 2"]
    assert main(["history", "Domain/web", "--state", str(state), "--diff", "1", "-o", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert (body["from"], body["to"]) == (1, 3) and "+  vcpus: 2" in body["diff"]
    assert main(["history", "Domain/web", "--state", str(state), "--diff", "9"]) == 1
    assert "no revision 9 (generations: 1, 2, 3)" in capsys.readouterr().err
