"""``kvmrec describe``: the page of one object, its JSON, its exit codes, and ages."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from kvmrec import store as stores
from kvmrec.api.kinds import Manifest, ObjectKey
from kvmrec.cli import describe
from kvmrec.cli.main import main
from kvmrec.store.lock import StateLock
from kvmrec.store.records import Drift, Status

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
KEY = ObjectKey("Domain", "web-1")
SPEC = {"memory": "64Mi", "vcpus": 1, "runStrategy": "Always", "disks": [], "autostart": False}
GUEST = {
    "agent": True,
    "hostname": "web-1.lan",
    "os": "Debian GNU/Linux 12",
    "osId": "debian",
    "kernel": "6.1.0-18-amd64",
    "addresses": [
        {
            "interface": "eth0",
            "mac": "52:54:00:aa:bb:cc",
            "address": "fe80::1",
            "prefix": 64,
            "family": "ipv6",
            "source": "agent",
        },
        {
            "interface": "eth0",
            "mac": "52:54:00:aa:bb:cc",
            "address": "10.0.0.5",
            "prefix": 24,
            "family": "ipv4",
            "source": "agent",
        },
    ],
}


def running(now: datetime) -> Status:
    status = (
        Status()
        .with_condition("Ready", "True", "Running", "", now - timedelta(minutes=5))
        .with_condition("Synced", "True", "Synced", "", now - timedelta(seconds=12))
    )
    return Status(
        observed_generation=1,
        conditions=status.conditions,
        last_reconcile_time=now - timedelta(seconds=3),
        details={"state": "running", "guest": GUEST},
    )


def make(path: Path, status: Status | None, *, events: int = 0, error: str | None = None) -> None:
    store = stores.open(path)
    try:
        store.apply(Manifest("Domain", "web-1", SPEC, "web.yaml", 1, labels={"tier": "web"}), T0)
        store.apply(Manifest("Domain", "other", SPEC, "other.yaml", 1), T0)
        if status is not None:
            store.record(KEY, status, (), datetime.now(UTC))
        for i in range(events):
            store.add_event(KEY, "Normal", f"Reason{i}", f"message {i}", T0 + timedelta(seconds=i))
        store.add_event(ObjectKey("Domain", "other"), "Warning", "NotMine", "x", T0)
        if error is not None:
            store.set_source_errors({"web.yaml": error, "other.yaml": "line 1: bad"}, T0)
    finally:
        store.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_healthy_object_shows_every_section_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    make(tmp_path / "s.db", running(now), events=12)
    capsys.readouterr()  # only what describe itself prints counts
    with StateLock.acquire(tmp_path / "s.db"):  # as while the service runs: no warning
        code, out, err = run(capsys, "describe", "Domain/web-1", "--state", str(tmp_path / "s.db"))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert "Name:            web-1" in lines
    assert "Labels:          tier=web" in lines
    assert "Source:          web.yaml" in lines
    assert "Generation:      1 (observed 1)" in lines
    assert "State:           running" in lines
    assert "  memory: 64Mi" in lines
    assert not any("disks" in line for line in lines)  # empty fields are left out
    conditions = lines.index("Conditions:")
    assert lines[conditions + 1].split() == ["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"]
    assert lines[conditions + 2].split()[:4] == ["Ready", "True", "Running", "5m"]
    assert lines[conditions + 3].split()[:4] == ["Synced", "True", "Synced", "12s"]
    assert "Drift:           <none>" in lines
    assert "Waiting for:     <nothing>" in lines
    assert "Manifest error:  <none>" in lines
    assert "  Host name:   web-1.lan" in lines
    assert "  OS:          Debian GNU/Linux 12 (kernel 6.1.0-18-amd64)" in lines
    # IPv4 first, each with its interface and where it was learnt.
    assert "  Addresses:   10.0.0.5/24 on eth0 52:54:00:aa:bb:cc (agent)" in lines
    assert (
        "fe80::1/64 on eth0"
        in lines[lines.index("  Addresses:   10.0.0.5/24 on eth0 52:54:00:aa:bb:cc (agent)") + 1]
    )
    events = lines[lines.index("Events (last 10):") + 2 :]
    assert [line.split()[2] for line in events] == [f"Reason{i}" for i in range(2, 12)]
    assert "NotMine" not in out  # another object's events


def test_an_object_with_drift_an_error_and_a_bad_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    status = (
        running(now)
        .with_condition("Synced", "False", "Drifted", "spec.vcpus", now)
        .with_condition("RestartRequired", "True", "LiveChangeRefused", "spec.vcpus", now)
    )
    status = Status(
        observed_generation=1,
        conditions=status.conditions,
        drift=(Drift("spec.vcpus", 2, 1),),
        last_error="domain is not running",
        retries=3,
        details={"state": "running", "stopping": {"purpose": "restart", "since": "x"}},
    )
    make(tmp_path / "s.db", status, error="line 3: spec.vcpus: must be an integer")
    code, out, _ = run(capsys, "describe", "Domain/web-1", "--state", str(tmp_path / "s.db"))
    assert code == 2
    lines = out.splitlines()
    assert lines[lines.index("Drift:") + 2].split() == ["spec.vcpus", "1", "->", "2"]
    waits = lines[lines.index("Waiting for:") + 1 : lines.index("Manifest error:")]
    assert waits == [
        "  a restart: spec.vcpus",
        "  the guest to stop (to restart)",
        "  a retry (attempt 3) after: domain is not running",
    ]
    error = lines[lines.index("Manifest error:") + 1]
    assert error.startswith("  web.yaml: line 3: spec.vcpus: must be an integer (since ")
    assert "other.yaml" not in out  # another file's error is not this object's


def test_waiting_for_a_dependency_and_the_crash_loop_backoff() -> None:
    obj = {
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "WaitingForDependency",
                "message": "network lan is not active",
            },
            {
                "type": "Synced",
                "status": "False",
                "reason": "WaitingForDependency",
                "message": "network lan is not active",
            },
        ],
        "details": {},
        "lastError": None,
        "retries": 0,
        "deleting": False,
    }
    assert describe.waiting_for(obj) == ["a dependency: network lan is not active"]
    obj["conditions"] = [
        {
            "type": "Ready",
            "status": "False",
            "reason": "CrashLoopBackOff",
            "message": "the guest keeps stopping; starting it again in 9s",
        }
    ]
    obj["details"] = {"quickFailures": 2}
    obj["deleting"] = True
    assert describe.waiting_for(obj) == [
        "crash-loop backoff (2 quick failures): the guest keeps stopping; starting it again in 9s",
        "its deletion: the manifest is gone",
    ]
    obj["conditions"] = [
        {"type": "Ready", "status": "False", "reason": "CpuNotSupported", "message": "no vmx"}
    ]
    assert describe.waiting_for(obj)[0] == "a CPU this host runs: no vmx"
    obj["conditions"] = [
        {"type": "Synced", "status": "False", "reason": "InUse", "message": "still used by a, b"}
    ]
    assert describe.waiting_for(obj) == [
        "its deletion: the manifest is gone (InUse: still used by a, b)"
    ]


def test_json_and_yaml_carry_the_status_entry_with_spec_events_and_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make(tmp_path / "s.db", running(datetime.now(UTC)), events=2, error="line 1: x")
    code, out, _ = run(
        capsys, "describe", "Domain/web-1", "--state", str(tmp_path / "s.db"), "-o", "json"
    )
    body = json.loads(out)
    assert code == 2  # its file is in error
    assert (body["kind"], body["name"], body["ready"], body["labels"]) == (
        "Domain",
        "web-1",
        True,
        {"tier": "web"},
    )
    assert body["spec"] == SPEC
    assert [e["reason"] for e in body["events"]] == ["Reason0", "Reason1"]
    assert [e["source"] for e in body["errors"]] == ["web.yaml"]
    assert body["guest"]["hostname"] == "web-1.lan"
    code, out, _ = run(
        capsys, "describe", "Domain/web-1", "--state", str(tmp_path / "s.db"), "-o", "yaml"
    )
    assert yaml.safe_load(out) == body


def test_an_object_never_reconciled_is_described_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make(tmp_path / "s.db", None)
    code, out, _ = run(capsys, "describe", "Domain/web-1", "--state", str(tmp_path / "s.db"))
    assert code == 2
    assert "  <none> (not reconciled yet)" in out.splitlines()
    assert "Last reconcile:  never" in out.splitlines()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["Domain/nope"], "Domain/nope: no such object", id="no-object"),
        pytest.param(["web-1"], "is not KIND/NAME", id="bad-key"),
    ],
)
def test_no_such_object_is_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    make(tmp_path / "s.db", None)
    code, out, err = run(capsys, "describe", *argv, "--state", str(tmp_path / "s.db"))
    assert (code, out) == (1, "")
    assert message in err


def test_no_state_file_is_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "describe", "Domain/web-1", "--state", str(tmp_path / "none.db"))
    assert code == 1
    assert "no state file" in err


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0s"),
        (12, "12s"),
        (119, "119s"),
        (130, "2m10s"),
        (300, "5m"),
        (45 * 60, "45m"),
        (3 * 3600 + 20 * 60, "3h20m"),
        (20 * 3600, "20h"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (12 * 86400, "12d"),
        (-5, "0s"),  # a clock a little ahead of ours
    ],
)
def test_ages_as_kubectl_shows_them(seconds: int, shown: str) -> None:
    assert describe.age((T0 - timedelta(seconds=seconds)).isoformat(), T0) == shown
