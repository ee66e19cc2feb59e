"""Which objects a fleet host reconciles: its placed Domains, their Snapshots, and the
host-level objects whose hostSelector picks it."""

from __future__ import annotations

from fleet_builders import bridge, domain, network, stored

from kvmrec.api.kinds import ObjectKey
from kvmrec.fleet.scope import Scope


def test_a_host_reconciles_only_the_domains_placed_on_it_and_their_snapshots() -> None:
    scope = Scope("h1", {"zone": "a"})
    web, db = domain("web")[0], domain("db")[0]
    scope.replace_placements({web.key: "h1", db.key: "h2"})
    snap = stored("Snapshot", "web-before", {"domain": "web"})
    other = stored("Snapshot", "db-before", {"domain": "db"})
    assert scope.mine(web) and not scope.mine(db)
    assert scope.mine(snap) and not scope.mine(other)
    assert scope.placed_here() == [web.key]


def test_a_moved_placement_changes_the_share_and_says_where_it_was() -> None:
    scope = Scope("h1", {})
    web = domain("web")[0]
    assert scope.set_placement(web.key, "h1") is None
    assert scope.mine(web)
    assert scope.set_placement(web.key, "h2") == "h1"
    assert not scope.mine(web)
    assert scope.set_placement(web.key, None) == "h2"
    assert scope.host_of(web.key) is None


def test_host_level_objects_follow_their_host_selector() -> None:
    scope = Scope("h1", {"zone": "a"})
    assert scope.mine(network("everywhere"))
    assert scope.mine(network("here", zone="a"))
    assert not scope.mine(network("there", zone="b"))
    assert scope.mine(bridge("br-a", zone="a"))
    assert scope.mine_of([network("here", zone="a"), network("there", zone="b")]) == [
        ObjectKey("Network", "here")
    ]


def test_a_held_domain_is_no_part_of_the_share_until_released() -> None:
    scope = Scope("lab1", {})
    scope.set_placement(ObjectKey("Domain", "web"), "lab1")
    web = stored("Domain", "web", {"type": "kvm", "memory": "64Mi"})
    snap = stored("Snapshot", "s1", {"domain": "web"})
    assert scope.mine(web) and scope.mine(snap)
    scope.hold(web.key)
    assert not scope.mine(web) and not scope.mine(snap)
    scope.release(web.key)
    assert scope.mine(web) and scope.mine(snap)
