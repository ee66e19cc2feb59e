"""HA recovery decided with in-memory hosts, placements and statuses and a fake clock: the
fencing window, the shared-storage filter, maxRelocations and maxRestarts, the leader's
one compare-and-swap per guest, and the self-fence of a host that lost its lease."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import pytest
from fleet_builders import T0, domain, host, placed, stored
from test_fleet_leader import World

from kvmrec.api.errors import ManifestError
from kvmrec.api.kinds import ObjectKey
from kvmrec.engine.clock import FakeClock
from kvmrec.fleet import recovery, scheduling
from kvmrec.fleet.leader import Leader
from kvmrec.fleet.relocation import Relocator
from kvmrec.fleet.scope import Scope
from kvmrec.fleet.self_fence import SelfFence
from kvmrec.store.fleet import Move, Placed
from kvmrec.store.fleet_records import HostRecord
from kvmrec.store.records import Status

SHARED = "/srv/shared"
HA = {"restart": True}


def ha_domain(name: str, disk: str = f"{SHARED}/vm.qcow2", **ha: Any) -> scheduling.Domain:
    return domain(name, disks=[{"path": disk}], highAvailability={**HA, **ha})


def shared_host(name: str, *, ready: bool = True, shares: bool = True, **kw: Any) -> HostRecord:
    return replace(host(name, ready=ready, **kw), shared_storage=(SHARED,) if shares else ())


class HaWorld(World):
    """The leader's world, with guests placed by hand."""

    def put(self, d: scheduling.Domain, on: str) -> None:
        self.placed[d[0].key] = Placed(placed(d, on), 1)


def leader(world: HaWorld, clock: FakeClock, window: float = 5.0) -> Leader:
    relocator = Relocator(store=world, placements=world, window=window, clock=clock.monotonic)  # type: ignore[arg-type]
    return Leader(
        election=world,  # type: ignore[arg-type]
        store=world,
        hosts=world,  # type: ignore[arg-type]
        placements=world,  # type: ignore[arg-type]
        watching=world,  # type: ignore[arg-type]
        prefixes=[],
        revision=lambda: 0,
        now=lambda: T0,
        relocator=relocator,
    )


def test_a_dead_hosts_ha_guest_moves_only_after_the_fencing_window() -> None:
    clock = FakeClock()
    vm, plain = ha_domain("vm"), domain("plain")
    world = HaWorld([shared_host("h1", ready=False), shared_host("h2")], [vm[0], plain[0]])
    world.put(vm, "h1")
    world.put(plain, "h1")
    world.status[(vm[0].key, "h1")] = Status()
    scheduler = leader(world, clock)
    assert scheduler.run_once().relocated == 0  # first seen dead now: the window starts
    clock.advance(4.9)
    assert scheduler.run_once().relocated == 0
    assert world.placed[vm[0].key].placement.host == "h1"
    clock.advance(0.1)
    assert scheduler.run_once().relocated == 1
    assert world.placed[vm[0].key].placement.host == "h2"
    assert world.placed[plain[0].key].placement.host == "h1"  # not HA: left alone
    fleet = world.status[(vm[0].key, None)]
    assert fleet.details[recovery.RELOCATIONS] == 1
    assert (vm[0].key, "h1") not in world.status  # the dead host's status of it is gone
    assert [r for k, r, _ in world.events if k == vm[0].key] == ["HostNotReady", "Relocated"]
    # Nothing left to do: the next pass writes nothing.
    before = world.writes
    scheduler.run_once()
    assert world.writes == before


def test_a_new_scheduler_counts_the_window_afresh() -> None:
    clock = FakeClock()
    vm = ha_domain("vm")
    world = HaWorld([shared_host("h1", ready=False), shared_host("h2")], [vm[0]])
    world.put(vm, "h1")
    leader(world, clock).run_once()
    clock.advance(10)
    successor = leader(world, clock)  # it never saw h1 go: it waits its own window
    assert successor.run_once().relocated == 0
    clock.advance(5)
    assert successor.run_once().relocated == 1


def test_only_a_host_that_shares_the_disks_takes_an_ha_guest() -> None:
    clock = FakeClock()
    vm = ha_domain("vm")
    hosts = [
        shared_host("h1", ready=False),
        shared_host("a-local", shares=False, memory=64 * 1024**3),  # emptier, but local only
        shared_host("h3"),
    ]
    world = HaWorld(hosts, [vm[0]])
    world.put(vm, "h1")
    windows = recovery.FencingWindows(5.0, clock.monotonic)
    windows.observe(hosts)
    clock.advance(5)
    (action,) = recovery.decide(hosts, [vm], {vm[0].key: placed(vm, "h1")}, [], {}, windows)
    assert isinstance(action, recovery.Relocate) and action.target == "h3"


def test_no_host_sharing_the_disks_is_a_relocation_failure_said_once() -> None:
    clock = FakeClock()
    vm = ha_domain("vm", disk="/var/lib/libvirt/images/vm.qcow2")
    world = HaWorld([shared_host("h1", ready=False), shared_host("h2")], [vm[0]])
    world.put(vm, "h1")
    scheduler = leader(world, clock, window=0.0)
    scheduler.run_once()
    ready = world.status[(vm[0].key, None)].condition("Ready")
    assert ready is not None and ready.reason == "RelocationFailed"
    assert "does not share /var/lib/libvirt/images/vm.qcow2" in ready.message
    assert world.placed[vm[0].key].placement.host == "h1"
    before = world.writes
    scheduler.run_once()
    assert world.writes == before  # the same message is not said again


def test_spent_relocations_end_in_ha_failed_and_the_guest_is_left_alone() -> None:
    clock = FakeClock()
    vm = ha_domain("vm", maxRelocations=1)
    world = HaWorld([shared_host("h1", ready=False), shared_host("h2")], [vm[0]])
    world.put(vm, "h1")
    world.status[(vm[0].key, None)] = Status(details={recovery.RELOCATIONS: 1})
    scheduler = leader(world, clock, window=0.0)
    assert scheduler.run_once().relocated == 0
    ready = world.status[(vm[0].key, None)].condition("Ready")
    assert ready is not None and ready.reason == "HAFailed"
    assert "maxRelocations (1) spent" in ready.message
    assert world.placed[vm[0].key].placement.host == "h1"
    before = world.writes
    scheduler.run_once()
    assert world.writes == before


def test_max_relocations_zero_never_moves() -> None:
    clock = FakeClock()
    vm = ha_domain("vm", maxRelocations=0)
    world = HaWorld([shared_host("h1", ready=False), shared_host("h2")], [vm[0]])
    world.put(vm, "h1")
    assert leader(world, clock, window=0.0).run_once().relocated == 0
    assert world.placed[vm[0].key].placement.host == "h1"


def test_a_host_stopped_on_purpose_keeps_its_ha_guests() -> None:
    clock = FakeClock()
    vm = ha_domain("vm")
    stopped = replace(shared_host("h1", ready=False), stopped=True)
    world = HaWorld([stopped, shared_host("h2")], [vm[0]])
    world.put(vm, "h1")
    scheduler = leader(world, clock, window=0.0)
    clock.advance(60)
    assert scheduler.run_once().relocated == 0


def test_a_guest_that_fails_to_start_past_max_restarts_moves_on() -> None:
    clock = FakeClock()
    vm = ha_domain("vm", maxRestarts=2)
    world = HaWorld([shared_host("h1"), shared_host("h2")], [vm[0]])
    world.put(vm, "h1")
    failing = Status().with_condition("Synced", "False", "ReconcileFailed", "lock", T0)
    world.status[(vm[0].key, "h1")] = replace(failing, retries=2)
    scheduler = leader(world, clock)
    assert scheduler.run_once().relocated == 0  # two failures: still retried there
    world.status[(vm[0].key, "h1")] = replace(failing, retries=3)
    assert scheduler.run_once().relocated == 1
    assert world.placed[vm[0].key].placement.host == "h2"
    # A guest that ran there (Ready once) is never moved for a failing reconcile.
    other = ha_domain("other", maxRestarts=0)
    ran = failing.with_condition("Ready", "True", "Running", "", T0)
    statuses = {other[0].key: {"h1": replace(ran, retries=9)}}
    windows = recovery.FencingWindows(0.0, clock.monotonic)
    hosts = world.host_records
    assert (
        recovery.decide(hosts, [other], {other[0].key: placed(other, "h1")}, [], statuses, windows)
        == []
    )


def test_a_lost_compare_moves_nothing() -> None:
    clock = FakeClock()
    vm = ha_domain("vm")
    world = HaWorld([shared_host("h1", ready=False), shared_host("h2")], [vm[0]])
    world.put(vm, "h1")
    relocator = Relocator(store=world, placements=world, window=0.0, clock=clock.monotonic)  # type: ignore[arg-type]

    real_relocate = world.relocate

    def racing(
        key: ObjectKey,
        move: Move,
        status: Status,
        event: tuple[str, str, str],
        now: datetime,
    ) -> bool:
        world.placed[key] = Placed(placed(vm, "h2"), 7)  # a migration moved it first
        return real_relocate(key, move, status, event, now)

    world.relocate = racing  # type: ignore[method-assign]
    domains = scheduling.parsed(world.list())
    assert relocator.run_once(world.host_records, domains, [], {}, T0) == 0
    assert (vm[0].key, None) not in world.status
    assert world.placed[vm[0].key].revision == 7 and not world.events


def test_the_manifest_rules_of_an_ha_domain() -> None:
    def problems(spec: dict[str, Any]) -> str:
        with pytest.raises(ManifestError) as caught:
            stored("Domain", "vm", {"memory": "64Mi", "highAvailability": HA, **spec})
        return str(caught.value)

    assert "spec.autostart" in problems({"autostart": True})
    assert "spec.disks[0]" in problems({"disks": [{"pool": "default", "volume": "v"}]})
    ok = stored("Domain", "vm", {"memory": "64Mi", "highAvailability": HA})
    ha = scheduling.parsed([ok])[0][1].high_availability
    assert ha is not None and (ha.max_restarts, ha.max_relocations) == (1, 1)


@dataclass
class Live:
    state: str


class Guests:
    def __init__(self, states: dict[str, str]) -> None:
        self.states = states
        self.destroyed: list[str] = []

    def get_domain(self, name: str) -> Live | None:
        state = self.states.get(name)
        return Live(state) if state else None

    def destroy_domain(self, name: str) -> None:
        self.destroyed.append(name)
        self.states[name] = "shutoff"


def test_a_host_that_lost_its_lease_destroys_its_running_ha_guests_only() -> None:
    scope = Scope("h1", {})
    ha, plain, elsewhere, stale, stopped = (
        ha_domain("ha")[0],
        domain("plain")[0],
        ha_domain("elsewhere")[0],
        ha_domain("stale")[0],
        ha_domain("stopped")[0],
    )
    placements = {ha.key: "h1", plain.key: "h1", elsewhere.key: "h2", stale.key: "h2"}
    scope.replace_placements({**placements, stopped.key: "h1"})
    # "stale" runs here though placed on h2: this host was frozen while it was relocated.
    guests = Guests({"ha": "running", "plain": "running", "stale": "running", "stopped": "shutoff"})
    sweeps: list[float] = []

    def wait(seconds: float) -> None:
        if not sweeps:
            guests.states["ha"] = "running"  # a start in flight at the loss ended after it
        sweeps.append(seconds)

    fence = SelfFence(scope, guests, wait=wait)
    for obj in (ha, plain, elsewhere, stale, stopped):
        fence.note(obj)
    assert fence.fence() == ["ha", "stale"]
    assert guests.destroyed == ["ha", "stale", "ha"]  # the next sweep caught "ha" again
    assert guests.states["plain"] == "running"  # not HA: nothing else would start it
    assert sweeps == [1.0, 1.0, 1.0]  # four sweeps over three seconds
    assert fence.ha_here() == ["ha", "stopped"]


def test_the_scheduler_places_an_ha_domain_only_where_its_disks_are_shared() -> None:
    vm, plain = ha_domain("vm"), domain("plain", disks=[{"path": "/var/lib/libvirt/images/p"}])
    hosts = [shared_host("big", shares=False, memory=64 * 1024**3), shared_host("small")]
    decisions = scheduling.schedule(hosts, [vm, plain], {}, [])
    assert isinstance(decisions[vm[0].key], scheduling.Scheduled)
    assert decisions[vm[0].key].host == "small"  # type: ignore[union-attr]
    assert decisions[plain[0].key].host == "big"  # type: ignore[union-attr]  # not HA: anywhere
    alone = scheduling.schedule(hosts[:1], [vm], {}, [])[vm[0].key]
    assert isinstance(alone, scheduling.Unschedulable)
    assert f"does not share {SHARED}/vm.qcow2" in alone.message


def test_the_fence_sweeps_on_while_libvirt_refuses() -> None:
    scope = Scope("h1", {})
    ha = ha_domain("ha")[0]
    scope.replace_placements({ha.key: "h1"})
    guests = Guests({"ha": "running"})
    refusals = iter(range(6))

    def destroy(name: str) -> None:
        if next(refusals, None) is not None:
            raise OSError("libvirt is unavailable")
        Guests.destroy_domain(guests, name)

    guests.destroy_domain = destroy  # type: ignore[method-assign]
    sweeps: list[float] = []
    fence = SelfFence(scope, guests, wait=sweeps.append)
    fence.note(ha)
    assert fence.fence() == ["ha"]
    assert len(sweeps) == 6 and guests.states["ha"] == "shutoff"
