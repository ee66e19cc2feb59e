"""The scheduler's filters, score and messages, one case at a time."""

from __future__ import annotations

from typing import Any

import pytest
from fleet_builders import GIB, MIB, T0, bridge, domain, host, network, placed, selector

from kvmrec.api.kinds import ObjectKey
from kvmrec.fleet.scheduling import (
    DEFAULT_OVERCOMMIT,
    SILENT,
    Decision,
    Overcommit,
    Scheduled,
    Unschedulable,
    allocations,
    parsed,
    schedule,
    size,
)
from kvmrec.store.fleet_records import Capacity, HostRecord, Placement
from kvmrec.store.records import StoredObject


def key(name: str) -> ObjectKey:
    return ObjectKey("Domain", name)


def one(
    hosts: list[HostRecord],
    d: Any,
    *,
    placements: dict[ObjectKey, Placement] | None = None,
    others: list[Any] | None = None,
    host_level: list[StoredObject] | None = None,
    overcommit: Overcommit = DEFAULT_OVERCOMMIT,
) -> Decision:
    decisions = schedule(
        hosts,
        [d, *(others or [])],
        placements or {},
        host_level or [],
        overcommit=overcommit,
    )
    return decisions[d[0].key]


def lacks(decision: Decision) -> dict[str, str]:
    assert isinstance(decision, Unschedulable), decision
    return dict(decision.hosts)


# -- each filter ----------------------------------------------------------------------------

ZONE_A = {"zone": "a"}


@pytest.mark.parametrize(
    ("the_host", "spec", "host_level", "why"),
    [
        pytest.param(host("lab1", ready=False), {}, [], "not Ready", id="not-ready"),
        pytest.param(host("lab1", cordoned=True), {}, [], "cordoned", id="cordoned"),
        pytest.param(
            host("lab1", unrenewed_for=SILENT), {}, [], "not renewing its lease", id="silent"
        ),
        pytest.param(
            host("lab1", labels=ZONE_A),
            {"hostSelector": selector(zone="b")},
            [],
            "label zone=b does not match (has zone=a)",
            id="label-other-value",
        ),
        pytest.param(
            host("lab1"),
            {"hostSelector": selector(zone="b")},
            [],
            "label zone=b does not match (no label zone)",
            id="label-missing",
        ),
        pytest.param(
            host("lab1", domain_type="qemu"),
            {"type": "kvm"},
            [],
            "no kvm (domain type qemu only)",
            id="kvm-on-a-qemu-host",
        ),
        pytest.param(
            host("lab1", labels=ZONE_A),
            {"interfaces": [{"name": "eth0", "network": "lan"}]},
            [network("lan", zone="b")],
            "Network/lan does not apply here (its hostSelector)",
            id="network-elsewhere",
        ),
        pytest.param(
            host("lab1"),
            {"interfaces": [{"name": "eth0", "network": "lan"}]},
            [network("lan", deleting=True)],
            "Network/lan does not apply here (its hostSelector)",
            id="network-being-deleted",
        ),
        pytest.param(
            host("lab1", labels=ZONE_A),
            {"interfaces": [{"name": "eth0", "bridge": "br-lab", "virtualport": "openvswitch"}]},
            [bridge("br-lab", zone="b")],
            "OvsBridge/br-lab does not apply here (its hostSelector)",
            id="bridge-elsewhere",
        ),
        pytest.param(
            host("lab1", memory=256 * MIB),
            {"memory": "512Mi"},
            [],
            "needs 512 MiB, 256 MiB free",
            id="memory",
        ),
        pytest.param(host("lab1", vcpus=1), {"vcpus": 5}, [], "needs 5 vCPUs, 4 free", id="vcpus"),
        pytest.param(
            host("lab1", memory=256 * MIB, vcpus=1, labels=ZONE_A),
            {"memory": "512Mi", "vcpus": 5, "hostSelector": selector(zone="b")},
            [],
            "label zone=b does not match (has zone=a) and needs 512 MiB, 256 MiB free "
            "and needs 5 vCPUs, 4 free",
            id="all-it-lacks",
        ),
    ],
)
def test_a_host_that_lacks_something_is_named_with_what(
    the_host: HostRecord, spec: dict[str, Any], host_level: list[StoredObject], why: str
) -> None:
    d = domain("web", **spec)
    decision = one([the_host], d, host_level=host_level)
    assert decision == Unschedulable(
        key("web"), f"0/1 hosts are available: lab1: {why}", (("lab1", why),)
    )


@pytest.mark.parametrize(
    ("the_host", "spec", "host_level"),
    [
        pytest.param(host("lab1", domain_type="qemu"), {"type": "qemu"}, [], id="qemu-on-qemu"),
        pytest.param(host("lab1"), {"type": "qemu"}, [], id="qemu-on-kvm"),
        pytest.param(
            host("lab1", labels={"zone": "b", "rack": "3"}),
            {"hostSelector": selector(zone="b")},
            [],
            id="labels-match",
        ),
        pytest.param(host("lab1"), {"hostSelector": {}}, [], id="empty-selector"),
        pytest.param(
            host("lab1", labels=ZONE_A),
            {"interfaces": [{"name": "eth0", "network": "lan"}]},
            [network("lan", zone="a")],
            id="network-here",
        ),
        pytest.param(
            host("lab1"),
            {"interfaces": [{"name": "eth0", "network": "lan"}]},
            [network("lan")],
            id="network-everywhere",
        ),
        pytest.param(
            host("lab1"),
            {"interfaces": [{"name": "eth0", "network": "default"}]},
            [],
            id="unmanaged-network",
        ),
        pytest.param(
            host("lab1"),
            {"interfaces": [{"name": "eth0", "bridge": "br0"}]},
            [network("lan", zone="x")],
            id="unmanaged-bridge",
        ),
        pytest.param(
            host("lab1", memory=512 * MIB, vcpus=1), {"memory": "512Mi", "vcpus": 4}, [], id="exact"
        ),
        pytest.param(host("lab1", unrenewed_for=SILENT - 1), {}, [], id="renewal-due"),
    ],
)
def test_a_host_that_has_everything_takes_the_domain(
    the_host: HostRecord, spec: dict[str, Any], host_level: list[StoredObject]
) -> None:
    decision = one([the_host], domain("web", **spec), host_level=host_level)
    assert isinstance(decision, Scheduled) and decision.host == "lab1"


def test_the_message_names_every_host_and_what_each_lacks() -> None:
    hosts = [
        host("lab3", ready=False),
        host("lab1", memory=768 * MIB, labels={"zone": "b"}),
        host("lab2", labels={"zone": "a"}),
    ]
    old = domain("old", memory="512Mi")
    d = domain("web", memory="512Mi", hostSelector=selector(zone="b"))
    decision = one(hosts, d, others=[old], placements={old[0].key: placed(old, "lab1")})
    assert isinstance(decision, Unschedulable)
    assert decision.message == (
        "0/3 hosts are available: lab1: needs 512 MiB, 256 MiB free; "
        "lab2: label zone=b does not match (has zone=a); lab3: not Ready"
    )


def test_no_host_at_all_says_so() -> None:
    decision = one([], domain("web"))
    assert decision == Unschedulable(
        key("web"), "0/0 hosts are available: no host has registered", ()
    )


# -- pinned ---------------------------------------------------------------------------------


def test_a_pinned_domain_goes_to_its_host_even_when_another_is_emptier() -> None:
    hosts = [host("lab1", memory=4 * GIB, vcpus=8), host("lab2")]
    decision = one(hosts, domain("web", host="lab2"))
    assert decision == Scheduled(
        key("web"), "lab2", "lab2: 1 GiB of 1 GiB and 8 of 8 vCPUs free, pinned by spec.host"
    )


@pytest.mark.parametrize(
    ("lab2", "why"),
    [
        pytest.param(host("lab2", ready=False), "not Ready", id="not-ready"),
        pytest.param(host("lab2", cordoned=True), "cordoned", id="cordoned"),
        pytest.param(host("lab2", memory=128 * MIB), "needs 256 MiB, 128 MiB free", id="small"),
    ],
)
def test_a_pinned_domain_whose_host_cannot_take_it_waits_and_says_why(
    lab2: HostRecord, why: str
) -> None:
    decision = one([host("lab1"), lab2], domain("web", host="lab2"))
    assert isinstance(decision, Unschedulable)
    assert decision.message == (
        f"0/2 hosts are available: lab1: not the pinned host (spec.host lab2); lab2: {why}"
    )


def test_a_domain_pinned_to_a_host_that_never_registered_names_it() -> None:
    decision = one([host("lab1")], domain("web", host="lab9"))
    assert lacks(decision) == {
        "lab1": "not the pinned host (spec.host lab9)",
        "lab9": "not registered (spec.host)",
    }
    assert decision.message.startswith("0/1 hosts are available: ")  # type: ignore[union-attr]


# -- score: spreading -----------------------------------------------------------------------


def test_ties_go_to_the_first_host_by_name() -> None:
    decision = one([host("lab2"), host("lab1")], domain("web"))
    assert decision == Scheduled(
        key("web"),
        "lab1",
        "lab1: 1 GiB of 1 GiB and 8 of 8 vCPUs free, least allocated of 2 hosts that fit",
    )


def test_domains_spread_over_equal_hosts() -> None:
    hosts = [host("lab1"), host("lab2"), host("lab3")]
    domains = [domain(f"web-{i}") for i in range(6)]
    decisions = schedule(hosts, domains, {}, [])
    on = [d.host for d in decisions.values() if isinstance(d, Scheduled)]
    assert sorted(on) == ["lab1", "lab1", "lab2", "lab2", "lab3", "lab3"]


def test_the_least_allocated_host_wins_counting_placed_domains() -> None:
    big, small = host("lab1", memory=2 * GIB), host("lab2")
    old = [domain("old-1", memory="1Gi"), domain("old-2", memory="256Mi")]
    placements = {old[0][0].key: placed(old[0], "lab1"), old[1][0].key: placed(old[1], "lab2")}
    # lab1 would be 1.25/2 of memory, lab2 0.5/1: lab2 stays less allocated.
    decision = one([big, small], domain("web"), others=old, placements=placements)
    assert decision == Scheduled(
        key("web"),
        "lab2",
        "lab2: 768 MiB of 1 GiB and 7 of 8 vCPUs free, least allocated of 2 hosts that fit",
    )


def test_the_reason_names_the_selector_that_matched() -> None:
    hosts = [host("lab1"), host("lab2", labels={"zone": "b"})]
    decision = one(hosts, domain("web", hostSelector=selector(zone="b")))
    assert decision == Scheduled(
        key("web"),
        "lab2",
        "lab2 (zone=b): 1 GiB of 1 GiB and 8 of 8 vCPUs free, the only host that fits",
    )


# -- one pass -------------------------------------------------------------------------------


def test_two_domains_never_both_take_the_last_room() -> None:
    hosts = [host("lab1", memory=512 * MIB)]
    first, second = domain("a", memory="384Mi"), domain("b", memory="384Mi")
    decisions = schedule(hosts, [second, first], {}, [])
    assert decisions[key("a")] == Scheduled(
        key("a"), "lab1", "lab1: 512 MiB of 512 MiB and 8 of 8 vCPUs free, the only host that fits"
    )
    assert lacks(decisions[key("b")]) == {"lab1": "needs 384 MiB, 128 MiB free"}


def test_vcpus_taken_in_a_pass_count_too() -> None:
    hosts = [host("lab1", vcpus=1)]  # 4 vCPUs with the default overcommit
    decisions = schedule(hosts, [domain("a", vcpus=3), domain("b", vcpus=2)], {}, [])
    assert isinstance(decisions[key("a")], Scheduled)
    assert lacks(decisions[key("b")]) == {"lab1": "needs 2 vCPUs, 1 free"}


def test_pinned_domains_choose_first_then_selected_then_larger() -> None:
    hosts = [host("lab1", memory=512 * MIB, labels={"zone": "b"})]
    free = domain("a-free", memory="512Mi")
    selected = domain("b-selected", memory="512Mi", hostSelector=selector(zone="b"))
    pinned = domain("c-pinned", memory="512Mi", host="lab1")
    decisions = schedule(hosts, [free, selected, pinned], {}, [])
    assert list(decisions) == [pinned[0].key, selected[0].key, free[0].key]
    assert isinstance(decisions[pinned[0].key], Scheduled)
    small, large = domain("a-small", memory="128Mi"), domain("z-large", memory="384Mi")
    assert list(schedule(hosts, [small, large], {}, [])) == [large[0].key, small[0].key]


def test_a_placed_domain_is_never_moved_and_still_counts() -> None:
    hosts = [host("lab1", ready=False), host("lab2", memory=512 * MIB)]
    old = domain("old", memory="512Mi")
    moved = domain("moved", memory="512Mi")
    placements = {old[0].key: placed(old, "lab2"), moved[0].key: placed(moved, "lab1")}
    decisions = schedule(hosts, [old, moved, domain("web")], placements, [])
    assert list(decisions) == [key("web")]
    assert lacks(decisions[key("web")]) == {
        "lab1": "not Ready",
        "lab2": "needs 256 MiB, 0 MiB free",
    }


def test_a_domain_being_deleted_is_not_placed() -> None:
    assert schedule([host("lab1")], [domain("web", deleting=True)], {}, []) == {}


@pytest.mark.parametrize(
    ("overcommit", "fits"),
    [
        pytest.param(Overcommit(), False, id="default-memory-1.0"),
        pytest.param(Overcommit(memory=1.5), True, id="memory-1.5"),
    ],
)
def test_memory_overcommit_multiplies_capacity(overcommit: Overcommit, fits: bool) -> None:
    d = domain("web", memory="768Mi")
    decision = one([host("lab1", memory=512 * MIB)], d, overcommit=overcommit)
    assert isinstance(decision, Scheduled) is fits


def test_cpu_overcommit_defaults_to_four_and_can_be_set() -> None:
    assert Overcommit().of(Capacity(GIB, 2)) == Capacity(GIB, 8)
    assert Overcommit(cpu=1.0).of(Capacity(GIB, 2)) == Capacity(GIB, 2)
    d = domain("web", vcpus=3)
    assert isinstance(one([host("lab1")], d, overcommit=Overcommit(cpu=1.0)), Unschedulable)


# -- the records and helpers the callers use -------------------------------------------------


def test_a_decision_becomes_a_placement_record() -> None:
    decision = one([host("lab1")], domain("web"))
    assert isinstance(decision, Scheduled)
    assert decision.placement(T0) == Placement(key("web"), "lab1", decision.reason, T0)


def test_allocations_sum_what_is_placed_on_each_host() -> None:
    ds = [domain("a", "256Mi", 2), domain("b", "1Gi", 1), domain("c")]
    placements = {ds[0][0].key: placed(ds[0], "lab1"), ds[1][0].key: placed(ds[1], "lab1")}
    assert allocations(ds, placements) == {"lab1": Capacity(1280 * MIB, 3)}


def test_parsed_keeps_only_domains_with_their_specs() -> None:
    d = domain("web", "128Mi")
    assert parsed([d[0], network("lan")]) == [d]


@pytest.mark.parametrize(
    ("nbytes", "text"),
    [
        (0, "0 MiB"),
        (448 * MIB, "448 MiB"),
        (MIB // 2, "0.5 MiB"),
        (GIB, "1 GiB"),
        (3 * GIB // 2, "1.5 GiB"),
        (2 * 1024 * GIB, "2 TiB"),
    ],
)
def test_sizes_read_as_people_write_them(nbytes: int, text: str) -> None:
    assert size(nbytes) == text
