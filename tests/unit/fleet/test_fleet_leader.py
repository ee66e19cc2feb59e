"""The fleet's leader, driven with in-memory hosts, placements and statuses: it places,
says why it cannot, marks objects of expired hosts, collects deletions, and writes nothing
when nothing changed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from fleet_builders import T0, domain, host, network

from kvmrec.api.kinds import ObjectKey
from kvmrec.fleet.leader import LEADERSHIP_CHECK, Leader
from kvmrec.fleet.scheduling import SILENT
from kvmrec.store.fleet import ChangeCallback, Move, Placed, Placing, RelistCallback
from kvmrec.store.fleet_records import HostRecord, Placement
from kvmrec.store.records import Status, StoredObject

GIB = 1024**3


class World:
    """Hosts, placements and statuses as the store would hold them; counts the writes."""

    def __init__(self, hosts: Sequence[HostRecord], objects: Sequence[StoredObject]) -> None:
        self.host_records = list(hosts)
        self.objects = {o.key: o for o in objects}
        self.placed: dict[ObjectKey, Placed] = {}
        self.status: dict[tuple[ObjectKey, str | None], Status] = {}
        self.events: list[tuple[ObjectKey | None, str, str]] = []
        self.writes = 0
        self.leading = True

    # Hosts
    def hosts(self) -> Sequence[HostRecord]:
        return self.host_records

    # Placements
    def placements(self, kind: str | None = None) -> Mapping[ObjectKey, Placed]:
        return dict(self.placed)

    def place(
        self,
        key: ObjectKey,
        host: str,
        reason: str,
        expected: int | None,
        now: datetime,
        event: tuple[str, str, str] | None = None,
    ) -> bool:
        was = self.placed.get(key)
        if (was.revision if was else None) != expected:
            return False  # compared by revision, as etcd does
        self.writes += 1  # one transaction, with its event
        revision = (was.revision if was else 0) + 1
        self.placed[key] = Placed(Placement(key, host, reason, now), revision)
        if event is not None:
            self.events.append((key, event[1], event[2]))
        return True

    def place_new(self, placings: Sequence[Placing], now: datetime) -> Sequence[ObjectKey]:
        if all(p.key not in self.placed for p in placings):  # one transaction for all
            self.writes += 1
            for p in placings:
                self.placed[p.key] = Placed(Placement(p.key, p.host, p.reason, now), 1)
                self.events.append((p.key, p.event[1], p.event[2]))
            return [p.key for p in placings]
        return [p.key for p in placings if self.place(p.key, p.host, p.reason, None, now, p.event)]

    # Election
    def is_leader(self) -> bool:
        return self.leading

    # FleetStatuses
    def list(self, kind: str | None = None) -> Sequence[StoredObject]:
        return sorted(self.objects.values(), key=lambda o: o.key)

    def host_statuses(
        self, key: ObjectKey | None = None
    ) -> Sequence[tuple[ObjectKey, str | None, Status]]:
        return [(k, h, s) for (k, h), s in sorted(self.status.items(), key=lambda i: str(i[0]))]

    def record_for(
        self,
        host: str | None,
        key: ObjectKey,
        status: Status,
        events: Sequence[tuple[str, str, str]],
        now: datetime,
    ) -> None:
        self.writes += 1
        self.status[(key, host)] = status
        self.events += [(key, reason, message) for _type, reason, message in events]

    def forget_status(self, key: ObjectKey, host: str | None) -> None:
        self.writes += 1
        self.status.pop((key, host), None)

    def relocate(
        self,
        key: ObjectKey,
        move: Move,
        status: Status,
        event: tuple[str, str, str],
        now: datetime,
    ) -> bool:
        source, target, reason, revision = move
        was = self.placed.get(key)
        if was is None or was.revision != revision:
            return False  # nothing written, as etcd's compare refuses the transaction
        self.writes += 1  # one transaction: placement, fleet status, old status, event
        self.placed[key] = Placed(Placement(key, target, reason, now), revision + 1)
        self.status[(key, None)] = status
        self.status.pop((key, source), None)
        self.events.append((key, event[1], event[2]))
        return True

    def add_event(
        self, key: ObjectKey | None, type_: str, reason: str, message: str, now: datetime
    ) -> None:
        self.writes += 1
        self.events.append((key, reason, message))

    def remove(self, key: ObjectKey) -> bool:
        self.writes += 1
        obj = self.objects.get(key)
        if obj is not None and not obj.deleting:
            return False
        self.objects.pop(key, None)
        return True

    # Watching (not used by run_once)
    def watch(
        self,
        prefixes: Sequence[str],
        start_revision: int,
        on_changes: ChangeCallback,
        on_relist: RelistCallback,
    ) -> None:
        raise AssertionError("run_once does not watch")


def leader(world: World) -> Leader:
    return Leader(
        election=world,  # type: ignore[arg-type]
        store=world,
        hosts=world,  # type: ignore[arg-type]
        placements=world,  # type: ignore[arg-type]
        watching=world,  # type: ignore[arg-type]
        prefixes=[],
        revision=lambda: 0,
        now=lambda: T0,
    )


def test_a_pass_places_what_fits_and_says_why_the_rest_does_not() -> None:
    small, big = domain("small", "512Mi")[0], domain("big", "64Gi")[0]
    world = World([host("h1", 2 * GIB), host("h2", GIB)], [small, big])
    result = leader(world).run_once()
    assert result.placed == 1 and result.unschedulable == 1
    assert world.placed[small.key].placement.host == "h1"  # the least allocated after it
    ready = world.status[(big.key, None)].condition("Ready")
    assert ready is not None and ready.reason == "Unschedulable"
    assert "h1: needs 64 GiB" in ready.message and "h2: needs 64 GiB" in ready.message
    assert (small.key, "Scheduled") in [(k, r) for k, r, _ in world.events]


def test_a_pass_writes_its_placements_together_each_with_its_event() -> None:
    world = World([host("h1"), host("h2")], [domain("web")[0], domain("db")[0]])
    assert leader(world).run_once().placed == 2
    assert world.writes == 1
    assert [r for _, r, _ in world.events] == ["Scheduled", "Scheduled"]


def test_placements_are_written_in_chunks_between_looks_at_the_election() -> None:
    many = [domain(f"d{i:03d}", "1Mi")[0] for i in range(LEADERSHIP_CHECK + 1)]
    world = World([host("h1", 4 * GIB, vcpus=64)], many)
    assert leader(world).run_once().placed == LEADERSHIP_CHECK + 1
    assert world.writes == 2


def test_a_pass_with_nothing_changed_writes_nothing() -> None:
    world = World([host("h1")], [domain("web")[0], domain("huge", "64Gi")[0]])
    leader(world).run_once()  # places web, then huge is unschedulable on what is left
    leader(world).run_once()  # ... and its message says what is left now
    before = world.writes
    result = leader(world).run_once()
    assert world.writes == before
    assert (result.placed, result.unschedulable, result.marked) == (0, 0, 0)


def test_a_domain_placed_after_being_unschedulable_loses_its_fleet_status() -> None:
    web = domain("web", "2Gi")[0]
    world = World([host("h1", GIB)], [web])
    leader(world).run_once()
    assert (web.key, None) in world.status
    world.host_records = [host("h1", GIB), host("h2", 4 * GIB)]
    leader(world).run_once()
    assert world.placed[web.key].placement.host == "h2"
    assert (web.key, None) not in world.status


def test_objects_of_an_expired_host_are_marked_once_and_its_guests_are_not_moved() -> None:
    web = domain("web")[0]
    lan = network("lan")
    world = World([host("h1"), replace(host("h2"), ready=False)], [web, lan])
    world.placed[web.key] = Placed(Placement(web.key, "h2", "earlier", T0), 1)
    running = Status(observed_generation=1).with_condition("Ready", "True", "Running", "", T0)
    world.status[(web.key, "h2")] = running
    world.status[(lan.key, "h2")] = running
    world.status[(lan.key, "h1")] = running
    assert leader(world).run_once().marked == 2
    for key in (web.key, lan.key):
        ready = world.status[(key, "h2")].condition("Ready")
        assert ready is not None and (ready.status, ready.reason) == ("Unknown", "HostNotReady")
    assert world.status[(lan.key, "h1")] is running
    assert world.placed[web.key].placement.host == "h2"
    assert leader(world).run_once().marked == 0


def test_a_domain_its_host_died_before_reporting_is_marked_too() -> None:
    web = domain("web")[0]
    world = World([host("h1"), replace(host("h2"), ready=False)], [web])
    world.placed[web.key] = Placed(Placement(web.key, "h2", "earlier", T0), 1)
    assert leader(world).run_once().marked == 1
    ready = world.status[(web.key, "h2")].condition("Ready")
    assert ready is not None and (ready.status, ready.reason) == ("Unknown", "HostNotReady")
    assert leader(world).run_once().marked == 0


def test_deletions_are_collected_only_once_no_host_holds_them() -> None:
    gone = domain("gone", deleting=True)[0]
    held = domain("held", deleting=True)[0]
    lan = network("lan", deleting=True)
    world = World([host("h1")], [gone, held, lan])
    world.placed[held.key] = Placed(Placement(held.key, "h1", "earlier", T0), 1)
    world.status[(lan.key, "h1")] = Status(observed_generation=1)
    assert leader(world).run_once().collected == 1
    assert gone.key not in world.objects and held.key in world.objects
    del world.status[(lan.key, "h1")]
    leader(world).run_once()
    assert lan.key not in world.objects


def test_a_leader_that_lost_the_election_mid_pass_stops_placing() -> None:
    world = World([host("h1", 4 * GIB)], [domain("a")[0], domain("b")[0]])
    world.leading = False
    assert leader(world).run_once().placed == 0
    assert not world.placed


def test_a_domain_waiting_on_a_silent_host_is_looked_at_again_soon() -> None:
    pinned = domain("web", host="h2")[0]
    world = World([host("h1"), host("h2", unrenewed_for=SILENT)], [pinned])
    result = leader(world).run_once()
    assert result.placed == 0 and result.recheck
    ready = world.status[(pinned.key, None)].condition("Ready")
    assert ready is not None and "h2: not renewing its lease" in ready.message
    world.host_records = [host("h1"), host("h2", unrenewed_for=1)]  # it renewed after all
    result = leader(world).run_once()
    assert result.placed == 1 and not result.recheck
    assert world.placed[pinned.key].placement.host == "h2"


def test_a_silent_host_with_nothing_waiting_asks_for_no_early_pass() -> None:
    world = World([host("h1"), host("h2", unrenewed_for=SILENT)], [domain("web")[0]])
    result = leader(world).run_once()
    assert result.placed == 1 and not result.recheck
    assert world.placed[domain("web")[0].key].placement.host == "h1"
