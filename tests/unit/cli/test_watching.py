"""What ``status -w`` prints after its first table, and label selectors on status and
events (the watch loops themselves run against a real service in the integration tests)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvmrec import store as stores
from kvmrec.api.kinds import Manifest, ObjectKey
from kvmrec.cli import report
from kvmrec.cli.main import main
from kvmrec.cli.watching import StatusPrinter
from kvmrec.store.base import Store
from kvmrec.store.records import Status

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
SPEC = {"memory": "64Mi"}


def status(ready: bool, state: str, at: datetime = T0) -> Status:
    s = (
        Status()
        .with_condition(
            "Ready",
            "True" if ready else "False",
            "Running" if ready else "NotRunning",
            "" if ready else f"it is {state}",
            T0,
        )
        .with_condition("Synced", "True", "Synced", "", T0)
    )
    return replace(s, observed_generation=1, last_reconcile_time=at, details={"state": state})


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = stores.open(tmp_path / "s.db")
    s.apply(Manifest("Domain", "web", SPEC, "web.yaml", 1, labels={"tier": "web"}), T0)
    s.apply(Manifest("Domain", "db", SPEC, "db.yaml", 1, labels={"tier": "db"}), T0)
    s.record(ObjectKey("Domain", "web"), status(True, "running"), (), datetime.now(UTC))
    s.record(ObjectKey("Domain", "db"), status(True, "running"), (), datetime.now(UTC))
    yield s
    s.close()


def test_after_the_table_only_changed_rows_are_printed(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    printer = StatusPrinter("table")
    printer.first(report.build(store))
    first = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in first] == [
        ["KIND", "NAME", "STATE"],
        ["Domain", "db", "running"],
        ["Domain", "web", "running"],
    ]

    # A resync that changes nothing visible prints nothing.
    store.record(
        ObjectKey("Domain", "web"),
        status(True, "running", T0 + timedelta(30)),
        (),
        datetime.now(UTC),
    )
    printer.update(report.build(store))
    assert capsys.readouterr().out == ""

    store.record(ObjectKey("Domain", "web"), status(False, "shutoff"), (), datetime.now(UTC))
    printer.update(report.build(store))
    changed = capsys.readouterr().out.splitlines()
    assert len(changed) == 1
    assert changed[0].split()[:5] == ["Domain", "web", "shutoff", "no", "yes"]
    assert changed[0].index("shutoff") == first[0].index("STATE")  # the table's columns

    store.mark_deleting(ObjectKey("Domain", "db"), T0)
    store.remove(ObjectKey("Domain", "db"))
    store.set_source_errors({"bad.yaml": "line 2: no"}, T0)
    printer.update(report.build(store))
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "Domain  db    -        -      -       -    -      removed",
        "error: bad.yaml: line 2: no",
    ]
    store.set_source_errors({}, T0)
    printer.update(report.build(store))
    assert capsys.readouterr().out == "error resolved: bad.yaml\n"


def test_json_watch_is_one_object_a_line(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    printer = StatusPrinter("json")
    printer.first(report.build(store))
    first = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(o["name"], o["ready"]) for o in first] == [("db", True), ("web", True)]

    store.record(
        ObjectKey("Domain", "web"),
        status(True, "running", T0 + timedelta(30)),
        (),
        datetime.now(UTC),
    )
    printer.update(report.build(store))
    assert capsys.readouterr().out == ""  # only lastReconcileTime moved
    store.record(ObjectKey("Domain", "web"), status(False, "shutoff"), (), datetime.now(UTC))
    printer.update(report.build(store))
    (line,) = capsys.readouterr().out.splitlines()
    assert (json.loads(line)["name"], json.loads(line)["state"]) == ("web", "shutoff")
    store.mark_deleting(ObjectKey("Domain", "web"), T0)
    store.remove(ObjectKey("Domain", "web"))
    printer.update(report.build(store))
    assert json.loads(capsys.readouterr().out) == {"kind": "Domain", "name": "web", "removed": True}


def test_status_and_events_keep_the_objects_whose_labels_match(
    tmp_path: Path, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    store.add_event(ObjectKey("Domain", "web"), "Normal", "Started", "web", T0)
    store.add_event(ObjectKey("Domain", "db"), "Normal", "Started", "db", T0)
    store.add_event(None, "Warning", "Guard", "everyone", T0)
    state = str(tmp_path / "s.db")

    assert main(["status", "--state", state, "-o", "json", "-l", "tier=web"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert [(o["name"], o["labels"]) for o in body["objects"]] == [("web", {"tier": "web"})]
    assert main(["status", "--state", state, "-o", "json", "-l", "tier!=web,tier"]) == 0
    assert [o["name"] for o in json.loads(capsys.readouterr().out)["objects"]] == ["db"]
    assert main(["status", "--state", state, "-o", "json", "-l", "nope"]) == 0
    assert json.loads(capsys.readouterr().out)["objects"] == []

    assert main(["events", "--state", state, "-o", "json", "-l", "tier=db"]) == 0
    events = json.loads(capsys.readouterr().out)["events"]
    assert [(e["object"], e["message"]) for e in events] == [("Domain/db", "db")]
    assert main(["events", "--state", state, "-o", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["events"]) == 3


@pytest.mark.parametrize("command", ["status", "events"])
def test_a_bad_selector_is_1_and_says_why(
    tmp_path: Path, store: Store, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    assert main([command, "--state", str(tmp_path / "s.db"), "-l", "tier=a b"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert f"kvmrec {command}: selector 'tier=a b': 'a b' is not a label value" in err


def test_yaml_watch_is_one_document_an_object_and_errors_are_documents_too(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    printer = StatusPrinter("yaml")
    printer.first(report.build(store))
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["name"] for d in docs] == ["db", "web"]
    store.set_source_errors({"bad.yaml": "line 2: no"}, T0)
    printer.update(report.build(store))
    (doc,) = yaml.safe_load_all(capsys.readouterr().out)
    assert doc["error"]["source"] == "bad.yaml"
    assert doc["error"]["message"] == "line 2: no"
