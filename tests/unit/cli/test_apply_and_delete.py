"""``kvmrec apply -f`` and ``kvmrec delete`` against a state file: checked as ``validate``
checks, stored in one go (created, configured, unchanged), a dry run that writes nothing
and names the changed fields, and deletions by name, all or nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvmrec import store as stores
from kvmrec.api.objects import ObjectKey
from kvmrec.cli.main import main


def domain(name: str, memory: str = "64Mi", extra: str = "") -> str:
    return (
        "apiVersion: kvmrec.io/v1alpha1\nkind: Domain\n"
        f"metadata:\n  name: {name}\nspec:\n  memory: {memory}\n{extra}"
    )


@pytest.fixture(autouse=True)
def no_service_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("KVMREC_CONFIG", "KVMREC_STATE", "KVMREC_MANIFESTS", "KVMREC_STORE"):
        monkeypatch.delenv(variable, raising=False)


def kvmrec(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--config", "/dev/null"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def stored(state: Path) -> dict[ObjectKey, tuple[int, bool, dict[str, object]]]:
    store = stores.open(state, create=False, read_only=True)
    try:
        return {o.key: (o.generation, o.deleting, dict(o.spec)) for o in store.list()}
    finally:
        store.close()


@pytest.fixture
def files(tmp_path: Path) -> Path:
    folder = tmp_path / "manifests"
    folder.mkdir()
    (folder / "a.yaml").write_text(domain("a") + "---\n" + domain("b"))
    return folder


def test_apply_creates_then_is_unchanged_then_configures(
    files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.db"
    code, out, _ = kvmrec(capsys, "apply", "-f", str(files), "--store", str(state))
    assert code == 0
    assert out.splitlines() == ["Domain/a created", "Domain/b created"]
    code, out, _ = kvmrec(capsys, "apply", "-f", str(files), "--state", str(state))
    assert (code, out.splitlines()) == (0, ["Domain/a unchanged", "Domain/b unchanged"])
    (files / "a.yaml").write_text(domain("a", "128Mi") + "---\n" + domain("b"))
    code, out, _ = kvmrec(capsys, "apply", "-f", str(files / "a.yaml"), "--state", str(state))
    assert (code, out.splitlines()) == (0, ["Domain/a configured", "Domain/b unchanged"])
    objects = stored(state)
    assert objects[ObjectKey("Domain", "a")][:2] == (2, False)
    assert objects[ObjectKey("Domain", "a")][2]["memory"] == "128Mi"
    assert objects[ObjectKey("Domain", "b")][:2] == (1, False)


def test_a_dry_run_names_the_changed_fields_and_writes_nothing(
    files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.db"
    code, out, _ = kvmrec(capsys, "apply", "-f", str(files), "--state", str(state), "--dry-run")
    assert (code, out.splitlines()) == (
        0,
        ["Domain/a created (dry run)", "Domain/b created (dry run)"],
    )
    assert not state.exists()  # not even an empty state file
    kvmrec(capsys, "apply", "-f", str(files), "--state", str(state))
    (files / "a.yaml").write_text(domain("a", "128Mi", "  vcpus: 2\n") + "---\n" + domain("b"))
    code, out, _ = kvmrec(
        capsys, "apply", "-f", str(files), "--state", str(state), "--dry-run", "-o", "json"
    )
    assert code == 0
    body = json.loads(out)
    assert body["dryRun"] is True
    a, b = body["objects"]
    assert (a["action"], a["generation"], b["action"]) == ("configured", 2, "unchanged")
    assert {f["field"]: (f["stored"], f["applied"]) for f in a["fields"]} == {
        "spec.memory": ("64Mi", "128Mi"),
        "spec.vcpus": (1, 2),
    }
    code, out, _ = kvmrec(capsys, "apply", "-f", str(files), "--state", str(state), "--dry-run")
    assert out.splitlines()[:3] == [
        "Domain/a configured (dry run)",
        '  spec.memory: "64Mi" -> "128Mi"',
        "  spec.vcpus: 1 -> 2",
    ]
    assert stored(state)[ObjectKey("Domain", "a")][:2] == (1, False)  # nothing written


def test_an_invalid_file_stores_nothing_and_names_file_field_and_reason(
    files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.db"
    kvmrec(capsys, "apply", "-f", str(files), "--state", str(state))
    (files / "a.yaml").write_text(domain("a", "128Mi") + "---\n" + domain("b"))
    (files / "bad.yaml").write_text(domain("c", "lots"))
    code, out, err = kvmrec(capsys, "apply", "-f", str(files), "--state", str(state))
    assert code == 2
    assert out == ""
    assert f"{files}/bad.yaml: line 6: document 1: Domain/c: spec.memory: 'lots' is not" in err
    assert "nothing applied" in err
    # The valid file was not stored either: a is still at its first generation.
    assert set(stored(state)) == {ObjectKey("Domain", "a"), ObjectKey("Domain", "b")}
    assert stored(state)[ObjectKey("Domain", "a")][0] == 1
    code, _, err = kvmrec(capsys, "apply", "-f", str(tmp_path / "nope.yaml"), "--state", str(state))
    assert code == 2
    assert "nope.yaml: no such file or directory" in err


def test_delete_marks_for_deletion_and_refuses_unknown_objects(
    files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.db"
    kvmrec(capsys, "apply", "-f", str(files), "--state", str(state))
    code, _, err = kvmrec(capsys, "delete", "Domain/a", "domain/nope", "--state", str(state))
    assert code == 2
    assert "kvmrec delete: Domain/nope: not found" in err
    assert "nothing deleted" in err
    assert not stored(state)[ObjectKey("Domain", "a")][1]  # all or nothing
    code, _, err = kvmrec(capsys, "delete", "Bogus/a", "--state", str(state))
    assert code == 2
    assert "Bogus" in err
    code, out, _ = kvmrec(capsys, "delete", "domains/a", "--state", str(state), "--dry-run")
    assert (code, out.strip()) == (0, "Domain/a deleted (deletionPolicy Delete) (dry run)")
    assert not stored(state)[ObjectKey("Domain", "a")][1]
    code, out, _ = kvmrec(capsys, "delete", "Domain/a", "--state", str(state))
    assert (code, out.strip()) == (0, "Domain/a deleted (deletionPolicy Delete)")
    assert stored(state)[ObjectKey("Domain", "a")][1]
    assert not stored(state)[ObjectKey("Domain", "b")][1]
    code, out, _ = kvmrec(capsys, "delete", "Domain/a", "--state", str(state))
    assert (code, out.strip()) == (0, "Domain/a is being deleted already")
    code, out, _ = kvmrec(capsys, "events", "Domain/a", "--state", str(state), "-o", "json")
    assert any(e["reason"] == "ManifestRemoved" for e in json.loads(out)["events"])
    # Applied again, the deletion is taken back.
    code, out, _ = kvmrec(capsys, "apply", "-f", str(files), "--state", str(state))
    assert out.splitlines()[0] == "Domain/a configured"
    assert not stored(state)[ObjectKey("Domain", "a")][1]


def test_delete_without_a_state_is_kvmrecs_own_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = kvmrec(capsys, "delete", "Domain/a", "--state", str(tmp_path / "none.db"))
    assert code == 1
    assert "none.db" in err
    assert not (tmp_path / "none.db").exists()
