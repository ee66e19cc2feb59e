"""Three real kvmrec hosts on the lab through what etcd itself goes through: a restart, a
compaction under the hosts' watches, and (three members) the loss of one member and of
the quorum. Each on an etcd of the test's own: the stack's is shared."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from realstack import state_of

from support.etcd_cluster import EtcdCluster, PrivateEtcd
from support.fleet import LabFleet, domain_manifest, lab_fleet_of
from support.lab import Lab

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateEtcd]:
    with PrivateEtcd(tmp_path_factory.mktemp("private-etcd")) as etcd:
        yield etcd


@pytest.fixture(scope="module")
def fleet(
    lab: Lab, private: PrivateEtcd, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabFleet]:
    """The lab hosts on the private etcd, each through a proxy of its own."""
    root = tmp_path_factory.mktemp("fleet")
    with lab_fleet_of(lab, root, private.address, proxy_to=private.endpoint) as running:
        yield running


def where_running(fleet: LabFleet, name: str) -> list[str]:
    """The lab hosts whose libvirt runs guest ``name``."""
    return [h for h in fleet.lab.hosts if state_of(fleet.guests.conn(h), name) == "running"]


def runs_once_where_placed(fleet: LabFleet, names: list[str]) -> None:
    for name in names:
        placed = fleet.fleet.placement(name)
        assert where_running(fleet, name) == [placed], f"{name} placed on {placed}"
        defined = [h for h in fleet.lab.hosts if state_of(fleet.guests.conn(h), name)]
        assert defined == [placed], f"{name} defined on {defined}"


def all_lost_their_lease(fleet: LabFleet, seen: dict[str, int]) -> bool:
    """Every host logged losing its lease since ``seen`` (log sizes before)."""
    return all("lost its lease" in h.log_text()[seen[n] :] for n, h in fleet.fleet.hosts.items())


def log_sizes(fleet: LabFleet) -> dict[str, int]:
    return {n: len(h.log_text()) for n, h in fleet.fleet.hosts.items()}


def test_etcd_stopped_and_started_every_host_resumes_nothing_lost_or_doubled(
    fleet: LabFleet, private: PrivateEtcd
) -> None:
    f, kind = fleet.fleet, fleet.lab.domain_type
    names = [fleet.name(f"r{i}") for i in range(6)]
    f.apply({n: domain_manifest(n, kind) for n in names})
    before = f.wait_domains(names)
    generations = {n: f.read_json(f"objects/Domain/{n}")["generation"] for n in names}
    seen = log_sizes(fleet)

    private.stop()
    stopped = time.monotonic()
    f.wait(lambda: all_lost_their_lease(fleet, seen), 20, "every host fenced")
    print(f"\netcd stopped: every host stopped acting after {time.monotonic() - stopped:.1f}s")
    assert all(h.running for h in f.hosts.values())  # waiting, not gone
    for name in names:
        assert where_running(fleet, name) == [before[name]]  # guests untouched meanwhile
    private.start()

    f.wait(lambda: f.live_hosts() == set(fleet.lab.hosts), 60, "every host registered again")
    assert f.wait_domains(names) == before
    assert {n: f.read_json(f"objects/Domain/{n}")["generation"] for n in names} == generations
    runs_once_where_placed(fleet, names)
    later = fleet.name("r-after")
    f.apply({"r-after": domain_manifest(later, kind)})
    f.wait_domains([later])
    runs_once_where_placed(fleet, [*names, later])


def test_etcd_compacted_under_the_watches_the_hosts_relist_and_carry_on(
    fleet: LabFleet, private: PrivateEtcd
) -> None:
    f, kind = fleet.fleet, fleet.lab.domain_type
    kept, removed = fleet.name("c-kept"), fleet.name("c-removed")
    f.apply({n: domain_manifest(n, kind, host="lab1") for n in (kept, removed)})
    f.wait_domains([kept, removed])
    f.wait(f.leader, 30, "a scheduler")
    seen = log_sizes(fleet)

    # Every host misses what follows (a few seconds: well inside their leases), and
    # etcd compacts it away before they are back.
    for proxy in fleet.proxies.values():
        proxy.cut("refuse")
    try:
        added = fleet.name("c-added")
        f.apply({"c-added": domain_manifest(added, kind, host="lab2")})
        f.delete("Domain", removed)
        gateway = f.gateway()
        try:
            gateway.compact(gateway.range(b"/", count_only=True).revision)
        finally:
            gateway.close()
    finally:
        for proxy in fleet.proxies.values():
            proxy.restore()

    f.wait(lambda: "compacted" in f.hosts["lab1"].log_text()[seen["lab1"] :], 30, "a relist")
    f.wait_domains([kept, added])
    f.wait(lambda: f.domain(removed) is None, 60, f"{removed} deleted")
    assert where_running(fleet, added) == ["lab2"]
    assert all(state_of(fleet.guests.conn(h), removed) is None for h in fleet.lab.hosts)
    assert where_running(fleet, kept) == ["lab1"]
    assert f.live_hosts() == set(fleet.lab.hosts)


def test_three_members_one_lost_changes_nothing_two_lost_the_hosts_hold_still(
    lab: Lab, tmp_path: Path
) -> None:
    with EtcdCluster(tmp_path / "etcd") as cluster:
        endpoints = ",".join(m.client_url.removeprefix("http://") for m in cluster.members)
        with lab_fleet_of(lab, tmp_path / "fleet", endpoints) as fleet:
            quorum_test(fleet, cluster)


def quorum_test(fleet: LabFleet, cluster: EtcdCluster) -> None:
    f, kind = fleet.fleet, fleet.lab.domain_type
    first = fleet.name("q1")
    f.apply({"q1": domain_manifest(first, kind)})
    f.wait_domains([first])

    cluster.stop_member(0, kill=True)
    second = fleet.name("q2")
    f.apply({"q2": domain_manifest(second, kind)})
    f.wait_domains([first, second])
    assert f.live_hosts() == set(fleet.lab.hosts)
    runs_once_where_placed(fleet, [first, second])

    placed = {n: f.placement(n) for n in (first, second)}
    seen = log_sizes(fleet)
    cluster.stop_member(1, kill=True)  # one of three left: no quorum
    f.wait(lambda: all_lost_their_lease(fleet, seen), 20, "every host fenced")
    host = placed[first]
    assert host is not None
    fleet.guests.conn(host).lookupByName(first).destroy()
    deadline = time.monotonic() + 5  # a host still acting restarts it within a second
    while time.monotonic() < deadline:
        assert state_of(fleet.guests.conn(host), first) == "shutoff", "restarted without quorum"
        time.sleep(0.5)
    assert where_running(fleet, second) == [placed[second]]
    assert all(h.running for h in f.hosts.values())

    cluster.start_member(1)
    f.wait(lambda: f.live_hosts() == set(fleet.lab.hosts), 60, "every host registered again")
    f.wait(lambda: where_running(fleet, first) == [host], 60, f"{first} running again")
    assert f.wait_domains([first, second]) == placed
    runs_once_where_placed(fleet, [first, second])
