"""What holds for every pass of the scheduler, on generated fleets and Domains.

Domains come in two batches: the first is scheduled and its decisions become placements,
then every Domain is handed to a second pass, as a scheduler that keeps running sees them.
"""

from __future__ import annotations

import random
from typing import Any

from fleet_builders import MIB, T0, domain, host, network, selector
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmrec.fleet.scheduling import Overcommit, Scheduled, Unschedulable, schedule
from kvmrec.store.fleet_records import HostRecord, Placement

NAMES = [f"lab{i}" for i in range(1, 6)]
ZONES = ["a", "b"]
HOST_LEVEL = [network("lan-a", zone="a"), network("lan-all")]

hosts_st = st.lists(
    st.builds(
        lambda memory, vcpus, zone, kind, ready, cordoned: (
            memory,
            vcpus,
            zone,
            kind,
            ready,
            cordoned,
        ),
        st.integers(0, 16).map(lambda n: n * 128 * MIB),
        st.integers(0, 4),
        st.sampled_from([None, *ZONES]),
        st.sampled_from(["kvm", "qemu"]),
        st.booleans(),
        st.booleans(),
    ),
    max_size=len(NAMES),
)

domain_st = st.fixed_dictionaries(
    {
        "memory": st.integers(1, 12).map(lambda n: f"{n * 128}Mi"),
        "vcpus": st.integers(1, 6),
        "type": st.sampled_from(["kvm", "qemu"]),
    },
    optional={
        "host": st.sampled_from([*NAMES, "lab9"]),
        "hostSelector": st.sampled_from(ZONES).map(lambda z: selector(zone=z)),
        "interfaces": st.sampled_from(["lan-a", "lan-all", "default"]).map(
            lambda n: [{"name": "eth0", "network": n}]
        ),
    },
).filter(lambda spec: not ("host" in spec and "hostSelector" in spec))


def fleet(drawn: list[tuple[Any, ...]]) -> list[HostRecord]:
    return [
        host(
            name,
            memory,
            vcpus,
            labels={"zone": zone} if zone else {},
            domain_type=kind,
            ready=ready,
            cordoned=cordoned,
        )
        for name, (memory, vcpus, zone, kind, ready, cordoned) in zip(NAMES, drawn, strict=False)
    ]


def placed_from(decisions: dict[Any, Any]) -> dict[Any, Placement]:
    return {k: d.placement(T0) for k, d in decisions.items() if isinstance(d, Scheduled)}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    drawn=hosts_st,
    first=st.lists(domain_st, max_size=8),
    second=st.lists(domain_st, max_size=8),
    memory=st.sampled_from([1.0, 1.5]),
    cpu=st.sampled_from([1.0, 4.0]),
    seed=st.integers(0, 1000),
)
def test_no_host_is_ever_over_its_capacity_and_every_refusal_names_every_host(
    drawn: list[tuple[Any, ...]],
    first: list[dict[str, Any]],
    second: list[dict[str, Any]],
    memory: float,
    cpu: float,
    seed: int,
) -> None:
    hosts = fleet(drawn)
    overcommit = Overcommit(memory=memory, cpu=cpu)
    early = [domain(f"a{i}", **spec) for i, spec in enumerate(first)]
    late = [domain(f"b{i}", **spec) for i, spec in enumerate(second)]
    placements = placed_from(schedule(hosts, early, {}, HOST_LEVEL, overcommit=overcommit))
    everything = early + late
    decisions = schedule(hosts, everything, placements, HOST_LEVEL, overcommit=overcommit)

    # Only the unplaced are decided, and the placed stay where they are.
    assert set(decisions) == {d[0].key for d in everything} - set(placements)
    final = placements | placed_from(decisions)

    by_host = {h.name: h for h in hosts}
    specs = {d[0].key: d[1] for d in everything}
    for name, h in by_host.items():
        room = overcommit.of(h.capacity)
        on = [specs[k] for k, p in final.items() if p.host == name]
        assert sum(s.memory for s in on) <= room.memory_bytes
        assert sum(s.vcpus for s in on) <= room.vcpus

    for k, decision in decisions.items():
        spec = specs[k]
        if isinstance(decision, Scheduled):
            chosen = by_host[decision.host]
            assert chosen.ready and not chosen.cordoned
            assert spec.host in (None, chosen.name)
            assert all(chosen.labels.get(lk) == lv for lk, lv in spec.host_selector.items())
            assert spec.type == "qemu" or chosen.domain_type == "kvm"
            nets = {i.network for i in spec.interfaces}
            assert "lan-a" not in nets or chosen.labels.get("zone") == "a"
            assert decision.reason.startswith(chosen.name)
        else:
            assert isinstance(decision, Unschedulable)
            named = [name for name, _ in decision.hosts]
            unknown = spec.host is not None and spec.host not in by_host
            expected = sorted(by_host) + ([spec.host] if unknown else [])
            assert named == expected
            for name in by_host:
                assert f"{name}: " in decision.message
            assert decision.message.startswith(f"0/{len(hosts)} hosts are available: ")

    # The same input in another order gives the same decisions.
    shuffled = list(everything)
    random.Random(seed).shuffle(shuffled)
    again = schedule(
        list(reversed(hosts)), shuffled, placements, HOST_LEVEL[::-1], overcommit=overcommit
    )
    assert list(again.items()) == list(decisions.items())
