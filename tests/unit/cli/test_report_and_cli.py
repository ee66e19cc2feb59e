"""The CLI contract: ``validate``, ``status`` (table, JSON, YAML, exit codes) and ``explain``."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from kvmrec import store as stores
from kvmrec.api.kinds import Manifest, ObjectKey
from kvmrec.cli import report
from kvmrec.cli.main import main
from kvmrec.store.records import Drift, Status

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
SPEC = {"memory": "64Mi", "vcpus": 1, "runStrategy": "Always", "autostart": False}

OBJECT_KEYS = {
    "kind",
    "name",
    "generation",
    "observedGeneration",
    "synced",
    "ready",
    "conditions",
    "drift",
    "source",
    "lastReconcileTime",
}
CONDITION_KEYS = {"type", "status", "reason", "message", "lastTransitionTime"}
DRIFT_KEYS = {"field", "desired", "actual"}


def doc(name: str, memory: str = "64Mi") -> str:
    return (
        "apiVersion: kvmrec.io/v1alpha1\nkind: Domain\n"
        f"metadata:\n  name: {name}\nspec:\n  memory: {memory}\n"
    )


def healthy(generation: int = 1, drift: tuple[Drift, ...] = ()) -> Status:
    status = (
        Status()
        .with_condition("Ready", "True", "Running", "", T0)
        .with_condition("Synced", "True", "Synced", "", T0)
    )
    return Status(
        observed_generation=generation,
        conditions=status.conditions,
        drift=drift,
        last_reconcile_time=T0 + timedelta(seconds=5),
        details={"state": "running"},
    )


def make_store(path: Path, *objects: tuple[str, Status | None]) -> None:
    store = stores.open(path)
    try:
        for name, status in objects:
            store.apply(Manifest("Domain", name, dict(SPEC), f"{name}.yaml", 1), T0)
            if status is not None:
                store.record(ObjectKey("Domain", name), status, (), datetime.now(UTC))
    finally:
        store.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- validate --------------------------------------------------------------------------------


def test_validate_a_good_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "web.yaml").write_text(doc("web-1") + "---\n" + doc("web-2"))
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "db.yml").write_text(doc("db"))
    (tmp_path / "README.md").write_text("not a manifest: {{{")
    code, out, _ = run(capsys, "validate", str(tmp_path))
    assert code == 0
    assert out.strip().splitlines()[-1] == "2 file(s), 3 object(s), valid"


def test_validate_a_directory_with_a_broken_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "good.yaml").write_text(doc("good"))
    (tmp_path / "broken.yaml").write_text(doc("broken", "64X"))
    code, out, _ = run(capsys, "validate", str(tmp_path))
    assert code == 2
    assert f"{tmp_path}/broken.yaml: line 6: document 1: Domain/broken: spec.memory: " in out
    assert "'64X' is not a quantity" in out
    assert "good.yaml" not in out
    assert out.strip().splitlines()[-1] == "2 file(s) (1 invalid), 1 valid object(s), 1 problem(s)"


def test_validate_a_single_file_and_a_missing_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(doc("good"))
    assert run(capsys, "validate", str(good))[0] == 0
    code, out, _ = run(capsys, "validate", str(good), str(tmp_path / "nope.yaml"))
    assert code == 2
    assert f"{tmp_path}/nope.yaml: no such file or directory" in out


def test_validate_the_same_object_in_two_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.yaml").write_text(doc("x"))
    (tmp_path / "b.yaml").write_text(doc("x"))
    code, out, _ = run(capsys, "validate", str(tmp_path))
    assert code == 2
    assert f"{tmp_path}/b.yaml: document 1: Domain/x is already defined in {tmp_path}/a.yaml" in out


# -- status ----------------------------------------------------------------------------------


def test_status_without_a_state_file_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.db"
    code, out, err = run(capsys, "status", "--state", str(missing))
    assert code == 1
    assert out == ""
    assert err.startswith("kvmrec status: ")
    assert str(missing) in err
    assert "no state file" in err
    assert not missing.exists()  # status never creates one


def test_status_of_a_synced_ready_object_is_0_and_json_has_the_contract(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.db"
    make_store(state, ("web-1", healthy()))
    code, out, _ = run(capsys, "status", "--state", str(state), "-o", "json")
    assert code == 0
    data = json.loads(out)
    assert set(data) == {"objects", "errors"}
    assert data["errors"] == []
    [obj] = data["objects"]
    # The contract's keys are all there (more fields may be added, DESIGN.md says).
    assert set(obj) >= OBJECT_KEYS
    assert {k: obj[k] for k in OBJECT_KEYS - {"conditions"}} == {
        "kind": "Domain",
        "name": "web-1",
        "generation": 1,
        "observedGeneration": 1,
        "synced": True,
        "ready": True,
        "drift": [],
        "source": "web-1.yaml",
        "lastReconcileTime": "2024-03-01T09:00:05Z",
    }
    assert [set(c) for c in obj["conditions"]] == [CONDITION_KEYS, CONDITION_KEYS]
    assert obj["conditions"][0] == {
        "type": "Ready",
        "status": "True",
        "reason": "Running",
        "message": "",
        "lastTransitionTime": "2024-03-01T09:00:00Z",
    }
    assert [c["type"] for c in obj["conditions"]] == ["Ready", "Synced"]


def test_status_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state.db"
    make_store(state, ("web-1", healthy()))
    code, out, _ = run(capsys, "status", "--state", str(state))
    assert code == 0
    header, row = out.strip().splitlines()
    assert header.split() == ["KIND", "NAME", "STATE", "READY", "SYNCED", "GEN", "DRIFT", "MESSAGE"]
    assert row.split() == ["Domain", "web-1", "running", "yes", "yes", "1/1", "-"]


def test_status_wide_shows_the_guests_addresses_host_name_and_os(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    guest = {
        "agent": True,
        "hostname": "web-1.example",
        "os": "Debian",
        "addresses": [
            {"address": "fd00::5", "family": "ipv6", "source": "agent"},
            {"address": "10.0.0.5", "family": "ipv4", "source": "agent"},
        ],
    }
    with_guest = replace(healthy(), details={"state": "running", "guest": guest})
    state = tmp_path / "state.db"
    make_store(state, ("web-1", with_guest), ("web-2", healthy()))
    code, out, _ = run(capsys, "status", "--state", str(state), "-o", "wide")
    assert code == 0
    header, first, second = out.strip().splitlines()
    assert header.split()[:6] == ["KIND", "NAME", "STATE", "IP", "HOSTNAME", "OS"]
    assert first.split()[:6] == [
        "Domain",
        "web-1",
        "running",
        "10.0.0.5(agent),fd00::5(agent)",
        "web-1.example",
        "Debian",
    ]
    assert second.split()[3:6] == ["-", "-", "-"]
    code, out, _ = run(capsys, "status", "--state", str(state), "-o", "json")
    objects = {o["name"]: o for o in json.loads(out)["objects"]}
    assert objects["web-1"]["guest"] == guest and objects["web-2"]["guest"] is None


def test_status_with_drift_is_2_and_reports_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.db"
    drift = (Drift("spec.autostart", True, False),)
    make_store(state, ("web-1", healthy(drift=drift)), ("web-2", healthy()))
    code, out, _ = run(capsys, "status", "--state", str(state), "-o", "json")
    assert code == 2
    web1 = json.loads(out)["objects"][0]
    assert web1["drift"] == [{"field": "spec.autostart", "desired": True, "actual": False}]
    assert [set(d) for d in web1["drift"]] == [DRIFT_KEYS]

    code, out, _ = run(capsys, "status", "--state", str(state))
    assert code == 2
    assert "spec.autostart: False -> True" in out


@pytest.mark.parametrize(
    "status",
    [
        pytest.param(None, id="never-reconciled"),
        pytest.param(healthy(generation=0), id="older-generation-observed"),
        pytest.param(
            healthy().with_condition("Ready", "False", "NotRunning", "shut off", T0),
            id="not-ready",
        ),
        pytest.param(
            healthy().with_condition("Synced", "False", "ReconcileFailed", "boom", T0),
            id="not-synced",
        ),
    ],
)
def test_status_of_an_unhealthy_object_is_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], status: Status | None
) -> None:
    state = tmp_path / "state.db"
    make_store(state, ("web-1", status), ("web-2", healthy()))
    code, out, _ = run(capsys, "status", "--state", str(state), "-o", "json")
    assert code == 2
    web1, web2 = json.loads(out)["objects"]
    assert web1["synced"] is False or web1["ready"] is False
    assert (web2["synced"], web2["ready"]) == (True, True)


def test_status_of_a_deleting_object_is_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.db"
    make_store(state, ("web-1", healthy()))
    store = stores.open(state)
    store.mark_deleting(ObjectKey("Domain", "web-1"), T0)
    store.close()
    code, out, _ = run(capsys, "status", "--state", str(state), "-o", "json")
    assert code == 2
    [obj] = json.loads(out)["objects"]
    assert (obj["synced"], obj["ready"]) == (False, False)


def test_status_with_a_source_error_is_2_and_lists_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.db"
    make_store(state, ("web-1", healthy()))
    store = stores.open(state)
    store.set_source_errors({"broken.yaml": "line 3: spec.memory: '64X' is not a quantity"}, T0)
    store.close()

    code, out, _ = run(capsys, "status", "--state", str(state), "-o", "json")
    assert code == 2
    [error] = json.loads(out)["errors"]
    assert {"source", "message"} <= set(error)
    assert (error["source"], error["message"]) == (
        "broken.yaml",
        "line 3: spec.memory: '64X' is not a quantity",
    )
    code, out, _ = run(capsys, "status", "--state", str(state))
    assert code == 2
    assert "error: broken.yaml: line 3: spec.memory" in out


def test_status_with_no_objects_is_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state.db"
    make_store(state)
    code, out, _ = run(capsys, "status", "--state", str(state))
    assert code == 0
    assert "(no objects)" in out
    assert json.loads(run(capsys, "status", "--state", str(state), "-o", "json")[1]) == {
        "objects": [],
        "errors": [],
    }


def test_status_yaml_parses_to_the_json_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.db"
    make_store(state, ("web-1", healthy(drift=(Drift("spec.vcpus", 2, 1),))))
    code_y, out_y, _ = run(capsys, "status", "--state", str(state), "-o", "yaml")
    code_j, out_j, _ = run(capsys, "status", "--state", str(state), "-o", "json")
    assert code_y == code_j == 2
    assert yaml.safe_load(out_y) == json.loads(out_j)


def test_status_of_one_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state.db"
    make_store(state, ("web-1", healthy()), ("web-2", None))
    code, out, _ = run(capsys, "status", "--state", str(state), "Domain/web-1", "-o", "json")
    assert code == 0  # web-2 is not ready, but it is not asked about
    assert [o["name"] for o in json.loads(out)["objects"]] == ["web-1"]

    code, out, _ = run(capsys, "status", "--state", str(state), "Domain/web-2", "-o", "json")
    assert code == 2
    assert [o["name"] for o in json.loads(out)["objects"]] == ["web-2"]


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        pytest.param("Domain/nope", "Domain/nope: no such object", id="unknown-object"),
        pytest.param("web-1", "'web-1' is not KIND/NAME", id="not-kind-slash-name"),
    ],
)
def test_status_of_a_bad_selector_is_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], selector: str, message: str
) -> None:
    state = tmp_path / "state.db"
    make_store(state, ("web-1", healthy()))
    code, out, err = run(capsys, "status", "--state", str(state), selector)
    assert code == 1
    assert message in err
    assert out == ""


def test_report_exit_code_directly() -> None:
    ok = {"kind": "Domain", "name": "a", "synced": True, "ready": True, "drift": []}
    assert report.exit_code({"objects": [ok], "errors": []}) == 0
    assert report.exit_code({"objects": [], "errors": []}) == 0
    assert report.exit_code({"objects": [ok], "errors": [{"source": "x", "message": "y"}]}) == 2
    assert report.exit_code({"objects": [ok | {"ready": False}], "errors": []}) == 2
    assert report.exit_code({"objects": [ok | {"synced": False}], "errors": []}) == 2
    assert report.exit_code({"objects": [ok | {"drift": [{"field": "f"}]}], "errors": []}) == 2


# -- explain ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Domain", "domain", "domains"])
def test_explain_domain(capsys: pytest.CaptureFixture[str], kind: str) -> None:
    code, out, _ = run(capsys, "explain", kind)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "KIND: Domain"
    assert "VERSION: kvmrec.io/v1alpha1" in lines
    memory = next(line for line in lines if line.startswith("spec.memory "))
    assert "required" in memory
    assert "string" in memory and "integer" in memory
    strategy = next(line for line in lines if line.startswith("spec.runStrategy "))
    assert "one of: Always, RerunOnFailure, Once, Halted, Manual" in strategy
    assert "(default Always)" in strategy
    bus = next(line for line in lines if line.startswith("spec.disks[].bus "))
    assert "one of: virtio, sata, scsi" in bus
    assert any(line.startswith("metadata.name ") and "required" in line for line in lines)


def test_explain_unknown_kind_is_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "explain", "Nope")
    assert code == 1
    assert "unknown kind 'Nope'" in err
    assert out == ""


@pytest.mark.parametrize("folder", ["examples", "reference"])
def test_the_shipped_manifests_are_valid(folder: str, capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(__file__).resolve().parents[3] / "manifests" / folder
    assert main(["validate", str(root)]) == 0, capsys.readouterr().out
