"""``kvmrec hosts`` and ``kvmrec status --store etcd://...`` as processes on the real etcd:
two hosts registered under live leases, Domains placed on them and a status reported by
one, read back as an operator reads them; a host whose lease goes shows NotReady (exit 2),
and looking writes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from kvmrec import store as stores
from kvmrec.api.kinds import Manifest, ObjectKey
from kvmrec.store.etcd.gateway import Gateway
from kvmrec.store.etcd.hosts import EtcdHosts
from kvmrec.store.etcd.leases import HostLease
from kvmrec.store.etcd.placements import EtcdPlacements
from kvmrec.store.fleet_records import Capacity, HostRecord
from kvmrec.store.records import Status

pytestmark = pytest.mark.integration

GIB = 1 << 30


def _record(name: str, **labels: str) -> HostRecord:
    return HostRecord(
        name=name,
        labels=labels,
        capacity=Capacity(memory_bytes=8 * GIB, vcpus=4),
        domain_type="kvm",
        ovs_datapath="system",
        version="9.9.9",
        ready=True,
        last_heartbeat=None,
    )


def kvmrec(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "kvmrec", *args, "--config", "/dev/null"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def fleet(etcd_gateway: Gateway, etcd_prefix: str) -> Iterator[tuple[str, dict[str, HostLease]]]:
    """hv-1 (zone=a) and hv-2 live; web (1Gi, 2 vCPUs) and db (512Mi) on hv-1, cache (2Gi)
    on hv-2; hv-1 reported web Ready. Yields the store's URL and the leases."""
    host, port = etcd_gateway.endpoints[0]
    url = f"etcd://{host}:{port}{etcd_prefix}"
    now = datetime.now(UTC)
    leases: dict[str, HostLease] = {}
    hosts = EtcdHosts(etcd_gateway, etcd_prefix)
    try:
        for name, labels in (("hv-1", {"zone": "a"}), ("hv-2", {})):
            leases[name] = HostLease(etcd_gateway, hosts.live_key(name))
            leases[name].acquire()
            EtcdHosts(etcd_gateway, etcd_prefix, leases[name]).register(
                _record(name, **labels), now
            )
        store = stores.open(url)
        specs = {
            "web": {"memory": "1Gi", "vcpus": 2},
            "db": {"memory": "512Mi"},
            "cache": {"memory": "2Gi"},
        }
        store.apply_many([Manifest("Domain", n, s, f"{n}.yaml", 0) for n, s in specs.items()], now)
        store.close()
        placements = EtcdPlacements(etcd_gateway, etcd_prefix)
        for name, on in (("web", "hv-1"), ("db", "hv-1"), ("cache", "hv-2")):
            assert placements.place(ObjectKey("Domain", name), on, "fits", None, now)
        reporter = stores.open(url, host="hv-1")
        ready = Status(observed_generation=1).with_condition("Ready", "True", "Running", "", now)
        reporter.record(
            ObjectKey("Domain", "web"),
            ready.with_condition("Synced", "True", "Synced", "", now),
            (),
            now,
        )
        reporter.close()
        yield url, leases
    finally:
        for lease in leases.values():
            lease.close()


def _by_name(out: str) -> dict[str, Any]:
    return {h["name"]: h for h in json.loads(out)["hosts"]}


def test_hosts_shows_capacity_allocation_and_readiness(
    fleet: tuple[str, dict[str, HostLease]], etcd_gateway: Gateway, etcd_prefix: str
) -> None:
    url, leases = fleet

    def written() -> list[tuple[bytes, int, int]]:
        kvs = etcd_gateway.range(f"{etcd_prefix}/".encode(), prefix=True).kvs
        return [(kv.key, kv.mod_revision, kv.lease) for kv in kvs]

    before = written()

    done = kvmrec("hosts", "--store", url, "-o", "json")
    assert done.returncode == 0, done.stderr
    listed = _by_name(done.stdout)
    assert list(listed) == ["hv-1", "hv-2"]
    one = listed["hv-1"]
    assert one["ready"] is True and one["cordoned"] is False
    assert one["labels"] == {"zone": "a"} and one["version"] == "9.9.9"
    assert one["capacity"] == {"memoryBytes": 8 * GIB, "vcpus": 4}
    assert one["allocated"] == {"memoryBytes": GIB + GIB // 2, "vcpus": 3}
    assert one["domains"] == 2
    assert one["lastHeartbeatTime"] is not None
    assert listed["hv-2"]["allocated"] == {"memoryBytes": 2 * GIB, "vcpus": 1}
    assert listed["hv-2"]["domains"] == 1

    table = kvmrec("hosts", "--store", url)
    assert table.returncode == 0, table.stderr
    rows = [line.split() for line in table.stdout.splitlines()]
    assert rows[1][:6] == ["hv-1", "Ready", "zone=a", "2", "1.5Gi/8Gi", "3/4"]

    # Reading took no part in the fleet: nothing written, nothing put on a lease.
    assert written() == before

    # hv-2's lease goes (revoked, as when it expires): NotReady, what it registered kept.
    leases["hv-2"].close()
    done = kvmrec("hosts", "--store", url, "-o", "json")
    assert done.returncode == 2, done.stderr
    gone = _by_name(done.stdout)["hv-2"]
    assert gone["ready"] is False
    assert gone["capacity"] == {"memoryBytes": 8 * GIB, "vcpus": 4}
    assert gone["domains"] == 1
    table = kvmrec("hosts", "--store", url)
    assert table.returncode == 2
    assert table.stdout.splitlines()[2].split()[:2] == ["hv-2", "NotReady"]

    # A cordon shows beside readiness, as kubectl shows it.
    assert EtcdHosts(etcd_gateway, etcd_prefix).set_cordoned("hv-1", True)
    table = kvmrec("hosts", "--store", url)
    assert table.stdout.splitlines()[1].split()[1] == "Ready,SchedulingDisabled"


def test_status_of_the_fleet_names_each_host(fleet: tuple[str, dict[str, HostLease]]) -> None:
    url, _ = fleet
    done = kvmrec("status", "--store", url, "-o", "json")
    assert done.returncode == 2, done.stderr  # db and cache have no status yet
    entries = {o["name"]: o for o in json.loads(done.stdout)["objects"]}
    assert entries["web"]["host"] == "hv-1" and entries["web"]["ready"] is True
    assert entries["db"]["host"] is None

    table = kvmrec("status", "--store", url)
    assert table.stdout.splitlines()[0].split()[:4] == ["KIND", "NAME", "HOST", "STATE"]

    mine = kvmrec("status", "--store", url, "--host", "hv-1", "-o", "json")
    assert mine.returncode == 0, mine.stderr
    assert [(o["name"], o["host"]) for o in json.loads(mine.stdout)["objects"]] == [("web", "hv-1")]
    other = kvmrec("status", "--store", url, "--host", "hv-2", "-o", "json")
    assert json.loads(other.stdout)["objects"] == []


def test_hosts_of_an_etcd_that_does_not_answer_names_it() -> None:
    done = kvmrec("hosts", "--store", "etcd://127.0.0.1:9/kvmrec-nowhere")
    assert done.returncode == 1
    assert "127.0.0.1:9" in done.stderr and done.stdout == ""
