"""``kvmrec status`` while a manifest file is broken: its objects are not in sync with it.

The objects of a file in error keep their last good spec, and show ``Synced=False``
(``InvalidManifest``, the file's error) in the table and in JSON; the ``errors`` list of the
contract stays. ``status KIND/NAME`` exits by that object alone. Read-only commands log
warnings only.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kvmrec import store as stores
from kvmrec.api.kinds import Manifest, ObjectKey
from kvmrec.cli.main import main
from kvmrec.store.lock import StateLock
from kvmrec.store.records import Status

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
SPEC = {"memory": "64Mi", "vcpus": 1, "runStrategy": "Always", "autostart": False}
PROBLEM = "line 8: invalid YAML: while parsing a flow sequence: expected ',' or ']' on line 9"


def healthy() -> Status:
    status = (
        Status()
        .with_condition("Ready", "True", "Running", "", T0)
        .with_condition("Synced", "True", "Synced", "", T0)
    )
    return Status(
        observed_generation=1,
        conditions=status.conditions,
        last_reconcile_time=T0 + timedelta(seconds=5),
        details={"state": "running"},
    )


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """web-1 (web-1.yaml, now broken) and web-2 (web-2.yaml), both synced and ready."""
    path = tmp_path / "state.db"
    store = stores.open(path)
    for name in ("web-1", "web-2"):
        store.apply(Manifest("Domain", name, dict(SPEC), f"{name}.yaml", 1), T0)
        store.record(ObjectKey("Domain", name), healthy(), (), datetime.now(UTC))
    store.set_source_errors({"web-1.yaml": PROBLEM}, T0 + timedelta(minutes=1))
    store.close()
    return path


def status(capsys: pytest.CaptureFixture[str], state: Path, *argv: str) -> tuple[int, str, str]:
    code = main(["status", "--state", str(state), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_objects_of_a_broken_file_are_not_synced_in_json(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = status(capsys, state, "-o", "json")
    assert code == 2
    body = json.loads(out)
    web1, web2 = body["objects"]
    assert (web1["name"], web1["synced"], web1["ready"]) == ("web-1", False, True)
    synced = next(c for c in web1["conditions"] if c["type"] == "Synced")
    assert synced == {
        "type": "Synced",
        "status": "False",
        "reason": "InvalidManifest",
        "message": f"web-1.yaml: {PROBLEM}",
        "lastTransitionTime": "2024-03-01T09:01:00Z",
    }
    assert (web2["name"], web2["synced"]) == ("web-2", True)
    # The contract's list of files in error stays.
    assert [(e["source"], e["message"]) for e in body["errors"]] == [("web-1.yaml", PROBLEM)]


def test_the_objects_of_a_broken_file_are_not_synced_in_the_table(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = status(capsys, state)
    assert code == 2
    rows = {line.split()[1]: line for line in out.splitlines()[1:3]}
    assert rows["web-1"].split()[3:5] == ["yes", "no"]  # READY, SYNCED
    assert f"Synced=False InvalidManifest: web-1.yaml: {PROBLEM}" in rows["web-1"]
    assert rows["web-2"].split()[3:5] == ["yes", "yes"]
    assert f"error: web-1.yaml: {PROBLEM}" in out


def test_status_of_one_object_exits_by_that_object_alone(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = status(capsys, state, "Domain/web-2", "-o", "json")
    assert code == 0, "another file's error does not make web-2 unhealthy"
    assert [o["name"] for o in json.loads(out)["objects"]] == ["web-2"]
    code, _, _ = status(capsys, state, "Domain/web-1", "-o", "json")
    assert code == 2


def test_when_the_file_is_fixed_synced_is_the_reconciles_again(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = stores.open(state)
    store.set_source_errors({}, T0 + timedelta(minutes=2))
    store.close()
    code, out, _ = status(capsys, state, "-o", "json")
    assert code == 0
    web1 = json.loads(out)["objects"][0]
    assert web1["synced"] is True
    assert [(c["type"], c["reason"]) for c in web1["conditions"]] == [
        ("Ready", "Running"),
        ("Synced", "Synced"),
    ]


def test_status_writes_nothing_on_stderr_and_logs_only_warnings(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # As while the service runs: a state nobody serves is worth a warning on stderr.
    with StateLock.acquire(state):
        code, out, err = status(capsys, state)
    assert (code, err) == (2, "")
    assert out
    assert logging.getLogger().getEffectiveLevel() == logging.WARNING
    # Asked for, INFO lines come back.
    main(["--log-level", "INFO", "status", "--state", str(state)])
    assert logging.getLogger().getEffectiveLevel() == logging.INFO
    capsys.readouterr()
