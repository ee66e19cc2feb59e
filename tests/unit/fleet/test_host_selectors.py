"""Which hosts a hostSelector picks, and on which hosts the host-level kinds apply."""

from __future__ import annotations

import pytest
from fleet_builders import bridge, domain, host, network, stored

from kvmrec.api.kinds import ObjectKey
from kvmrec.fleet.selectors import applicable, applies_to, hosts_of, mismatches

LAB1 = host("lab1", labels={"zone": "a", "rack": "1"})
LAB2 = host("lab2", labels={"zone": "b"})
LAB3 = host("lab3", ready=False)


@pytest.mark.parametrize(
    ("match", "picked"),
    [
        pytest.param({}, {"lab1", "lab2", "lab3"}, id="empty-picks-all"),
        pytest.param({"zone": "a"}, {"lab1"}, id="one-label"),
        pytest.param({"zone": "a", "rack": "1"}, {"lab1"}, id="all-labels"),
        pytest.param({"zone": "a", "rack": "2"}, set(), id="one-of-two-wrong"),
        pytest.param({"gpu": "yes"}, set(), id="absent-label"),
    ],
)
def test_a_selector_picks_the_hosts_with_all_its_labels(
    match: dict[str, str], picked: set[str]
) -> None:
    assert {h.name for h in (LAB1, LAB2, LAB3) if applies_to(h, match)} == picked


def test_mismatches_say_each_label_that_does_not_match() -> None:
    assert mismatches({"zone": "a"}, {"zone": "b", "gpu": "yes", "rack": ""}) == [
        "label gpu=yes does not match (no label gpu)",
        "label rack= does not match (no label rack)",
        "label zone=b does not match (has zone=a)",
    ]
    assert mismatches({"zone": "a", "x": "y"}, {"zone": "a"}) == []


def test_host_level_objects_apply_on_every_matching_host_ready_or_not() -> None:
    everywhere = network("lan")
    zone_b = bridge("br-b", zone="b")
    gone = network("old", deleting=True)
    policy = stored(
        "SnapshotPolicy",
        "nightly",
        {
            "domains": ["web"],
            "every": "1d",
            "retention": {"keepLast": 1},
            "hostSelector": {"matchLabels": {"zone": "a"}},
        },
    )
    web = domain("web")[0]
    found = applicable([LAB1, LAB2, LAB3], [everywhere, zone_b, gone, policy, web])
    lan, br_b, nightly = everywhere.key, zone_b.key, ObjectKey("SnapshotPolicy", "nightly")
    assert found == {
        "lab1": frozenset({lan, nightly}),
        "lab2": frozenset({lan, br_b}),
        "lab3": frozenset({lan}),
    }
    assert hosts_of(zone_b, [LAB3, LAB2, LAB1]) == ["lab2"]
    assert hosts_of(everywhere, [LAB3, LAB2, LAB1]) == ["lab1", "lab2", "lab3"]
