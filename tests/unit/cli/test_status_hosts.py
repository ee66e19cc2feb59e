"""``kvmrec status`` of a fleet: each entry names its host (null while unplaced, one entry
per host for a kind that applies to several), a HOST column when any entry has a host,
and ``--host NAME`` to see one host; a state file has no hosts and looks as before."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kvmrec import store as stores
from kvmrec.api.kinds import Manifest, ObjectKey
from kvmrec.cli import report
from kvmrec.cli.main import main
from kvmrec.store.base import Store
from kvmrec.store.records import Status

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
WEB = ObjectKey("Domain", "web")
DB = ObjectKey("Domain", "db")
LAN = ObjectKey("Network", "lan")


def ready(host: str) -> Status:
    status = Status(observed_generation=1, last_reconcile_time=T0)
    status = status.with_condition("Ready", "True", "Running", f"on {host}", T0)
    return status.with_condition("Synced", "True", "Synced", "", T0)


class FleetView:
    """A store with statuses by host, as a fleet's store keeps them."""

    def __init__(self, store: Store, entries: Sequence[tuple[ObjectKey, str | None, Status]]):
        self._store = store
        self._entries = entries

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def host_statuses(
        self, key: ObjectKey | None = None
    ) -> Sequence[tuple[ObjectKey, str | None, Status]]:
        return [e for e in self._entries if key is None or e[0] == key]


@pytest.fixture
def store() -> Any:
    opened = stores.open(":memory:")
    opened.apply_many(
        [
            Manifest("Domain", "web", {"memory": "64Mi"}, "web.yaml", 1),
            Manifest("Domain", "db", {"memory": "64Mi"}, "db.yaml", 1),
            Manifest("Network", "lan", {"forward": "isolated"}, "lan.yaml", 1),
        ],
        T0,
    )
    yield opened
    opened.close()


def test_a_store_without_hosts_has_no_host_column_and_null_hosts(store: Store) -> None:
    store.record(WEB, ready("x"), (), T0)
    result = report.build(store)
    assert [o["host"] for o in result["objects"]] == [None, None, None]
    assert report.table(result).splitlines()[0].split()[:3] == ["KIND", "NAME", "STATE"]


def test_a_fleet_store_shows_each_host_and_filters_by_one(store: Store) -> None:
    fleet: Any = FleetView(
        store,
        [(WEB, "hv-1", ready("hv-1")), (LAN, "hv-1", ready("hv-1")), (LAN, "hv-2", ready("hv-2"))],
    )
    result = report.build(fleet)
    entries = [(o["kind"], o["name"], o["host"]) for o in result["objects"]]
    # db has no status yet: unplaced, one entry of no host; lan applies to both hosts.
    assert entries == [
        ("Domain", "db", None),
        ("Domain", "web", "hv-1"),
        ("Network", "lan", "hv-1"),
        ("Network", "lan", "hv-2"),
    ]
    lines = report.table(result).splitlines()
    assert lines[0].split()[:4] == ["KIND", "NAME", "HOST", "STATE"]
    assert lines[1].split()[:3] == ["Domain", "db", "-"]
    assert lines[4].split()[:3] == ["Network", "lan", "hv-2"]
    one = report.build(fleet, host="hv-2")
    assert [(o["name"], o["host"], o["ready"]) for o in one["objects"]] == [("lan", "hv-2", True)]
    assert report.exit_code(one) == 0


def test_status_host_on_a_state_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KVMREC_STORE", raising=False)
    state = tmp_path / "state.db"
    opened = stores.open(state)
    opened.apply(Manifest("Domain", "web", {"memory": "64Mi"}, "web.yaml", 1), T0)
    opened.close()
    args = ["status", "--config", "/dev/null", "--state", str(state), "-o", "json"]
    assert main(args) == 2
    body = json.loads(capsys.readouterr().out)
    assert [(o["name"], o["host"]) for o in body["objects"]] == [("web", None)]
    main([*args, "--host", "hv-1"])
    assert json.loads(capsys.readouterr().out)["objects"] == []


def test_a_watch_tells_the_hosts_of_one_object_apart(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    from kvmrec.cli import watching

    entries = [(LAN, "hv-1", ready("hv-1")), (LAN, "hv-2", ready("hv-2"))]
    printer = watching.StatusPrinter("table")
    printer.first(report.build(FleetView(store, entries)))  # type: ignore[arg-type]
    assert capsys.readouterr().out.splitlines()[0].split()[:3] == ["KIND", "NAME", "HOST"]
    failing = Status(observed_generation=1).with_condition("Ready", "False", "HostNotReady", "", T0)
    entries[1] = (LAN, "hv-2", failing)
    printer.update(report.build(FleetView(store, entries)))  # type: ignore[arg-type]
    changed = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in changed] == [["Network", "lan", "hv-2"]]
    printer.update(report.build(FleetView(store, entries[:1])))  # type: ignore[arg-type]
    gone = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] + line.split()[-1:] for line in gone] == [
        ["Network", "lan", "hv-2", "removed"]
    ]
