"""``kvmrec hosts`` from a fleet's hosts and placements: the JSON of DESIGN.md's fleet
contract, the kubectl-style table, and the exit code by readiness."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kvmrec.api.kinds import ObjectKey
from kvmrec.cli import hosts
from kvmrec.cli.main import main
from kvmrec.store.fleet_records import Capacity, HostRecord, Placement
from kvmrec.store.records import StoredObject

NOW = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
GIB = 1 << 30


def _host(
    name: str, *, ready: bool = True, cordoned: bool = False, draining: bool = False, **labels: str
) -> HostRecord:
    return HostRecord(
        name=name,
        labels=labels,
        capacity=Capacity(8 * GIB, 4),
        domain_type="kvm",
        ovs_datapath="system",
        version="0.9.1",
        ready=ready,
        last_heartbeat=NOW - timedelta(seconds=3 if ready else 330),
        cordoned=cordoned,
        draining=draining,
    )


def _domain(name: str, memory: str, vcpus: int) -> StoredObject:
    return StoredObject(
        key=ObjectKey("Domain", name),
        uid=f"uid-{name}",
        generation=1,
        digest="d",
        spec={"memory": memory, "vcpus": vcpus},
        source=f"{name}.yaml",
    )


class FakeFleet:
    """A fleet's view with the hosts, Domains and placements a test gives it."""

    def __init__(
        self,
        records: Sequence[HostRecord],
        domains: Sequence[StoredObject],
        placed: Mapping[str, str],
    ) -> None:
        self._hosts = records
        self._domains = domains
        self._placed = {
            ObjectKey("Domain", name): Placement(ObjectKey("Domain", name), host, "fits", NOW)
            for name, host in placed.items()
        }
        self.closed = False

    def hosts(self) -> Sequence[HostRecord]:
        return self._hosts

    def placements(self) -> Mapping[ObjectKey, Placement]:
        return self._placed

    def list(self, kind: str | None = None) -> Sequence[StoredObject]:
        return [d for d in self._domains if kind in (None, d.key.kind)]

    def close(self) -> None:
        self.closed = True


def _fleet() -> FakeFleet:
    return FakeFleet(
        [_host("hv-1", zone="a", ssd="true"), _host("hv-2", ready=False, cordoned=True)],
        [_domain("web", "1Gi", 2), _domain("db", "512Mi", 1), _domain("cache", "2Gi", 1)],
        # gone: a placement of a Domain that no longer exists counts for nothing.
        {"web": "hv-1", "db": "hv-1", "cache": "hv-2", "gone": "hv-2"},
    )


def test_json_is_the_fleet_contract() -> None:
    result = hosts.build(_fleet())
    assert list(result) == ["hosts"]
    first, second = result["hosts"]
    assert first == {
        "name": "hv-1",
        "ready": True,
        "labels": {"zone": "a", "ssd": "true"},
        "capacity": {"memoryBytes": 8 * GIB, "vcpus": 4},
        "allocated": {"memoryBytes": GIB + GIB // 2, "vcpus": 3},
        "domains": 2,
        "version": "0.9.1",
        "lastHeartbeatTime": "2024-03-01T08:59:57Z",
        "cordoned": False,
        "draining": False,
    }
    assert (second["name"], second["ready"], second["cordoned"]) == ("hv-2", False, True)
    assert second["allocated"] == {"memoryBytes": 2 * GIB, "vcpus": 1}
    assert second["domains"] == 1
    assert json.loads(hosts.render(result, "json", NOW)) == result
    assert hosts.exit_code(result) == 2


def test_the_table_reads_like_kubectl_get_nodes() -> None:
    lines = hosts.render(hosts.build(_fleet()), "table", NOW).splitlines()
    assert [c.strip() for c in lines[0].split("  ") if c.strip()] == hosts.HEADER
    hv1 = ["hv-1", "Ready", "ssd=true,zone=a", "2", "1.5Gi/8Gi", "3/4", "0.9.1", "3s"]
    hv2 = ["hv-2", "NotReady,SchedulingDisabled", "<none>", "1", "2Gi/8Gi", "1/4", "0.9.1"]
    assert lines[1].split() == hv1
    assert lines[2].split() == [*hv2, "5m30s"]


def test_all_ready_exits_0_and_an_empty_fleet_says_so() -> None:
    ready = FakeFleet([_host("hv-1")], [], {})
    result = hosts.build(ready)
    assert result["hosts"][0]["allocated"] == {"memoryBytes": 0, "vcpus": 0}
    assert hosts.exit_code(result) == 0
    empty = hosts.build(FakeFleet([], [], {}))
    assert hosts.exit_code(empty) == 0
    assert hosts.render(empty, "table", NOW).splitlines()[-1] == "(no hosts)"


def test_yaml_has_the_same_shape() -> None:
    import yaml

    result = hosts.build(_fleet())
    assert yaml.safe_load(hosts.render(result, "yaml", NOW)) == result


@pytest.mark.parametrize(
    ("nbytes", "shown"),
    [(0, "0"), (512 << 20, "512Mi"), (8 * GIB, "8Gi"), (8152344576, "7.6Gi"), (3 << 40, "3Ti")],
)
def test_sizes(nbytes: int, shown: str) -> None:
    assert hosts.size(nbytes) == shown


@pytest.mark.parametrize("store", ["/tmp/state.db", "sqlite:///tmp/state.db"])
def test_a_store_that_is_not_etcd_is_refused(
    store: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KVMREC_STORE", raising=False)
    assert main(["hosts", "--config", "/dev/null", "--store", store]) == 1
    assert "hosts needs an etcd:// store" in capsys.readouterr().err


def test_no_store_at_all_is_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KVMREC_STORE", raising=False)
    monkeypatch.delenv("KVMREC_STATE", raising=False)
    assert main(["hosts", "--config", "/dev/null"]) == 1
    assert "hosts needs an etcd:// store" in capsys.readouterr().err


def test_an_etcd_that_does_not_answer_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hosts", "--config", "/dev/null", "--store", "etcd://127.0.0.1:9/x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kvmrec hosts: ") and "127.0.0.1:9" in err


def test_the_view_is_closed_after_reading(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = _fleet()
    opened: list[Any] = []

    def open_view(url: str) -> FakeFleet:
        opened.append(url)
        return fleet

    monkeypatch.setattr("kvmrec.store.open_fleet_view", open_view)
    code = main(["hosts", "--config", "/dev/null", "--store", "etcd://h:1/p", "-o", "json"])
    assert code == 2 and opened == ["etcd://h:1/p"] and fleet.closed
    assert [h["name"] for h in json.loads(capsys.readouterr().out)["hosts"]] == ["hv-1", "hv-2"]


def test_a_draining_host_says_so_beside_scheduling_disabled() -> None:
    fleet = FakeFleet([_host("hv-1", cordoned=True, draining=True)], [], {})
    result = hosts.build(fleet)
    assert (result["hosts"][0]["cordoned"], result["hosts"][0]["draining"]) == (True, True)
    line = hosts.render(result, "table", NOW).splitlines()[1]
    assert line.split()[1] == "Ready,SchedulingDisabled,Draining"
