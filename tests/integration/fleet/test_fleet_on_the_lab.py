"""Three real kvmrec hosts on the lab, sharing one desired state in the stack's etcd.

Each lab host runs ``kvmrec run --store etcd://PROXY/PREFIX --host labN --label zone=..``
against its own libvirtd, reaching etcd through a proxy of its own (so one host can be cut
off). The fleet is started once for the module; a test that kills or cuts a host brings it
back before the next. Every assertion looks at what really happened: the guest in the lab
host's libvirt, the keys in etcd, ``kvmrec status -o json``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from realstack import state_of

from kvmrec.api import quantities
from support.fleet import MIB, Fleet, LabFleet, domain_manifest, lab_fleet_of, ready_condition
from support.lab import Lab, stack_etcd_address

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabFleet]:
    """The three lab hosts, each through a cuttable proxy to the stack's etcd."""
    with lab_fleet_of(
        lab, tmp_path_factory.mktemp("fleet"), "127.0.0.1:2379", proxy_to=stack_etcd_address()
    ) as running:
        yield running


@pytest.fixture(autouse=True)
def whole_fleet(fleet: LabFleet) -> Iterator[None]:
    """Every test starts, and leaves, with the three hosts running and reachable."""
    yield
    for proxy in fleet.proxies.values():
        proxy.restore()
    fleet.fleet.ensure_running()


def others(fleet: LabFleet, host: str) -> list[str]:
    return [h for h in fleet.lab.hosts if h != host]


def not_leading(fleet: LabFleet) -> str:
    """A host that is not the scheduler's (so killing it tests one thing only)."""
    leader = fleet.fleet.wait(fleet.fleet.leader, 30, "a scheduler elected")
    return next(h for h in reversed(fleet.lab.hosts) if h != leader)


def allocated_on(fleet: Fleet, host: str) -> int:
    """Bytes of memory the Domains placed on ``host`` take, as etcd records them."""
    gateway = fleet.gateway()
    try:
        placed = gateway.range(f"{fleet.prefix}/placements/Domain/".encode(), prefix=True).kvs
    finally:
        gateway.close()
    total = 0
    for kv in placed:
        name = kv.key.decode().rsplit("/", 1)[-1]
        if fleet.placement(name) != host:
            continue
        obj = fleet.read_json(f"objects/Domain/{name}")
        total += quantities.parse_bytes(obj["spec"]["memory"])
    return total


def test_placement_by_label_by_capacity_and_unschedulable(fleet: LabFleet) -> None:
    f, kind = fleet.fleet, fleet.lab.domain_type
    by_label = fleet.name("zone-b")
    f.apply(
        {"zone-b": domain_manifest(by_label, kind, hostSelector={"matchLabels": {"zone": "b"}})}
    )
    assert f.wait_domains([by_label]) == {by_label: "lab2"}
    assert f.placement(by_label) == "lab2"
    assert state_of(fleet.guests.conn("lab2"), by_label) == "running"
    assert all(state_of(fleet.guests.conn(h), by_label) is None for h in ("lab1", "lab3"))

    # lab1 and lab2 filled by pinned Domains that never start (their memory is only
    # booked, never allocated): a 64 MiB guest fits lab3 alone.
    fillers = {}
    for host in ("lab1", "lab2"):
        capacity = f.read_json(f"hostinfo/{host}")["capacity"]["memory_bytes"]
        free = capacity - allocated_on(f, host)
        memory = f"{(free - 32 * MIB) // MIB}Mi"
        fillers[fleet.name(f"fill-{host}")] = domain_manifest(
            fleet.name(f"fill-{host}"), kind, host=host, memory=memory, runStrategy="Halted"
        )
    f.apply({name: text for name, text in fillers.items()})
    f.wait(lambda: all(f.placement(n) for n in fillers), 30, "the fillers placed")
    try:
        by_room = fleet.name("room")
        f.apply({"room": domain_manifest(by_room, kind)})
        assert f.wait_domains([by_room]) == {by_room: "lab3"}
        assert state_of(fleet.guests.conn("lab3"), by_room) == "running"
        placement = f.read_json(f"placements/Domain/{by_room}")
        assert placement["host"] == "lab3"
        assert "the only host that fits" in placement["reason"]
    finally:
        for name in fillers:
            f.delete("Domain", name)

    too_big = fleet.name("huge")
    f.apply({"huge": domain_manifest(too_big, kind, memory="64Ti")})
    obj = f.wait_domain(too_big, reason="Unschedulable", status="False")
    message = ready_condition(obj)["message"]  # type: ignore[index]
    assert message.startswith("0/3 hosts are available")
    for host in fleet.lab.hosts:
        assert f"{host}: needs 64 TiB" in message
    assert obj["host"] is None and f.placement(too_big) is None
    assert all(state_of(fleet.guests.conn(h), too_big) is None for h in fleet.lab.hosts)
    f.delete("Domain", too_big)
    f.wait(lambda: f.domain(too_big) is None, 30, "the unschedulable Domain gone")
    f.wait(lambda: all(f.domain(n) is None for n in fillers), 60, "the fillers gone")


def test_a_host_killed_is_not_ready_within_20s_and_the_others_carry_on(
    fleet: LabFleet, record_property: pytest.RecordProperty
) -> None:
    f, kind = fleet.fleet, fleet.lab.domain_type
    victim = not_leading(fleet)
    names = {h: fleet.name(f"k-{h}") for h in fleet.lab.hosts}
    f.apply({n: domain_manifest(n, kind, host=h) for h, n in names.items()})
    f.wait_domains(list(names.values()))

    f.kill9(victim)
    killed = time.monotonic()
    f.wait(lambda: victim not in f.live_hosts(), 20, f"{victim} NotReady in etcd")
    obj = f.wait_domain(names[victim], reason="HostNotReady", status="Unknown", timeout=20)
    measured = time.monotonic() - killed
    record_property("not_ready_seconds", round(measured, 1))
    print(f"\n{victim} killed -9: NotReady (HostNotReady in status) after {measured:.1f} s")
    assert victim in ready_condition(obj)["message"]  # type: ignore[index]
    # Its guest untouched, the others' Domains still Ready and still served.
    assert state_of(fleet.guests.conn(victim), names[victim]) == "running"
    for host in others(fleet, victim):
        assert state_of(fleet.guests.conn(host), names[host]) == "running"
    assert f.wait_domains([names[h] for h in others(fleet, victim)], timeout=5)
    newcomer = fleet.name("after-kill")
    f.apply({"after-kill": domain_manifest(newcomer, kind)})
    placed = f.wait_domains([newcomer])[newcomer]
    assert placed in others(fleet, victim)
    assert state_of(fleet.guests.conn(placed), newcomer) == "running"

    # Back: it registers again and reports its guest Ready.
    f.ensure_running()
    f.wait_domain(names[victim], timeout=60)


def test_a_host_cut_off_from_etcd_stops_acting_and_converges_once_back(fleet: LabFleet) -> None:
    f, kind = fleet.fleet, fleet.lab.domain_type
    victim = not_leading(fleet)
    guest = fleet.name("cut")
    f.apply({"cut": domain_manifest(guest, kind, host=victim)})
    f.wait_domains([guest])
    status_key = f"status/Domain/{guest}/{victim}"

    fleet.proxies[victim].cut()
    cut = time.monotonic()
    host = f.hosts[victim]
    f.wait(lambda: "lost its lease" in host.log_text(), 15, f"{victim} fenced within the TTL")
    print(f"\n{victim} cut off: stopped acting after {time.monotonic() - cut:.1f} s")
    fleet.guests.conn(victim).lookupByName(guest).destroy()
    # The leader marks it once the lease has expired in etcd; nothing else writes it.
    f.wait_domain(guest, reason="HostNotReady", status="Unknown", timeout=20)
    marked = f.key_value(status_key)
    assert marked is not None
    deadline = time.monotonic() + 5  # a host still acting restarts it within a second
    while time.monotonic() < deadline:
        assert state_of(fleet.guests.conn(victim), guest) == "shutoff", "restarted while cut off"
        time.sleep(0.5)
    now = f.key_value(status_key)
    assert now is not None and now.mod_revision == marked.mod_revision  # nothing it wrote
    assert host.running

    fleet.proxies[victim].restore()
    f.wait(lambda: victim in f.live_hosts(), 30, f"{victim} registered again")
    f.wait(lambda: state_of(fleet.guests.conn(victim), guest) == "running", 60, "restarted")
    assert f.wait_domains([guest]) == {guest: victim}


def test_the_schedulers_host_killed_another_takes_over_and_places(fleet: LabFleet) -> None:
    f, kind = fleet.fleet, fleet.lab.domain_type
    leader = f.wait(f.leader, 30, "a scheduler elected")
    f.kill9(leader)
    killed = time.monotonic()
    successor = f.wait(lambda: (f.leader() or leader) != leader and f.leader(), 30, "a new leader")
    print(
        f"\nscheduler {leader} killed -9: {successor} leads after {time.monotonic() - killed:.1f}s"
    )
    assert successor in others(fleet, leader)
    newcomer = fleet.name("after-leader")
    f.apply({"after-leader": domain_manifest(newcomer, kind)})
    placed = f.wait_domains([newcomer])[newcomer]
    assert placed in others(fleet, leader)
    assert state_of(fleet.guests.conn(placed), newcomer) == "running"


def test_a_host_stops_at_once_on_sigterm_and_rejoins(fleet: LabFleet) -> None:
    f = fleet.fleet
    host = f.hosts[not_leading(fleet)]
    assert host.proc is not None
    host.proc.terminate()
    try:
        code = host.proc.wait(15)  # a blocked watch stream held it up before
    except subprocess.TimeoutExpired:
        pytest.fail(f"{host.name} ignored SIGTERM for 15 s; log: {host.log}")
    assert code == 0
    assert "stopped in" in host.log_text()
    f.wait(lambda: host.name not in f.live_hosts(), 5, "its lease revoked on the way out")
    f.ensure_running()


def test_publish_keeps_the_last_good_state_and_holds_an_emptied_directory_back(
    fleet: LabFleet, tmp_path: Path
) -> None:
    f, kind = fleet.fleet, fleet.lab.domain_type
    manifests = tmp_path / "published"
    names = [fleet.name("pub-a"), fleet.name("pub-b")]
    f.write(manifests, {n: domain_manifest(n, kind) for n in names})
    log = (tmp_path / "publish.log").open("ab")
    publisher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kvmrec",
            "publish",
            "--manifests",
            str(manifests),
            "--store",
            f.url,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        placed = f.wait_domains(names)
        generations = {n: f.read_json(f"objects/Domain/{n}")["generation"] for n in names}

        (manifests / f"{names[1]}.yaml").write_text("kind: Domain\nmetadata: {name: [\n")
        f.wait(lambda: errors(f).get(f"{names[1]}.yaml"), 30, "the broken file's error")
        kept = f.read_json(f"objects/Domain/{names[1]}")
        assert kept["generation"] == generations[names[1]] and not f.domain(names[1])["deleting"]
        assert state_of(fleet.guests.conn(placed[names[1]]), names[1]) == "running"

        for path in manifests.iterdir():
            path.unlink()
        f.wait(lambda: "refusing to delete" in errors(f).get("(directory)", ""), 30, "held back")
        for name in names:
            obj = f.domain(name)
            assert obj is not None and not obj["deleting"]
            assert state_of(fleet.guests.conn(placed[name]), name) == "running"
        assert publisher.poll() is None
    finally:
        publisher.terminate()
        publisher.wait(15)
        log.close()


def errors(f: Fleet) -> dict[str, str]:
    return {e["source"]: e["message"] for e in f.status().get("errors", [])}
