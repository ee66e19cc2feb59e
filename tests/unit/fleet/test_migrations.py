"""Migrations carried out by a source host, with in-memory requests and placements, a
scripted libvirt job and a fake clock: what blocks is named before anything starts, the
limits hold requests Pending, progress is written at most every few seconds, a job without
progress is cancelled with the guest left where it was, and the placement moves only once
libvirt finished (set to where the guest runs even when its compare fails); an operator's
cancel ends a Pending request at once and aborts a Running one, the guest staying."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import pytest
from fleet_builders import T0, host

from kvmrec.api.kinds import ObjectKey
from kvmrec.backends.protocols import MigrationTarget
from kvmrec.fleet import migration, requests
from kvmrec.fleet.migrating import HostMigrations
from kvmrec.fleet.scope import Scope
from kvmrec.store.fleet import Placed
from kvmrec.store.fleet_records import HostRecord, Migration, Placement

KEY = ObjectKey("Domain", "web")
MIB = 1024**2


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def wall(self) -> datetime:
        return T0 + timedelta(seconds=self.now)


class Store:
    """Requests, placements and hosts as etcd would hold them, with revisions."""

    def __init__(self, hosts: Sequence[HostRecord]) -> None:
        self.revision = 1
        self.requests: dict[ObjectKey, Migration] = {}
        self.placed: dict[ObjectKey, Placed] = {}
        self.host_records = {h.name: h for h in hosts}
        self.updates = 0

    def _next(self) -> int:
        self.revision += 1
        return self.revision

    # Placements
    def placement(self, key: ObjectKey) -> Placed | None:
        return self.placed.get(key)

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
        current = self.placed.get(key)
        if (current.revision if current else None) != expected:
            return False
        self.placed[key] = Placed(Placement(key, host, reason, now), self._next())
        return True

    def unplace(self, key: ObjectKey, expected: int) -> bool:
        current = self.placed.get(key)
        if current is None or current.revision != expected:
            return False
        del self.placed[key]
        self._next()
        return True

    # Migrations
    def migrations(self) -> tuple[Mapping[ObjectKey, Migration], int]:
        return dict(self.requests), self.revision

    def migration(self, key: ObjectKey) -> Migration | None:
        return self.requests.get(key)

    def request(self, m: Migration, placement_revision: int) -> bool:
        self.requests[m.key] = dataclasses.replace(m, revision=self._next())
        return True

    def update(self, m: Migration) -> bool:
        current = self.requests.get(m.key)
        if current is None or current.revision != m.revision:
            return False
        self.updates += 1
        self.requests[m.key] = dataclasses.replace(m, revision=self._next())
        return True

    def start(self, m: Migration, seen: int) -> bool:
        if self.revision != seen:
            return False
        return self.update(dataclasses.replace(m, state="Running", reason=""))

    def remove(self, key: ObjectKey, revision: int) -> bool:
        return self.requests.pop(key, None) is not None

    # Hosts
    def host(self, name: str) -> HostRecord | None:
        return self.host_records.get(name)

    def hosts(self) -> Sequence[HostRecord]:
        return list(self.host_records.values())


class Job:
    """A libvirt job that reports ``readings`` one a second, then ends."""

    def __init__(self, clock: Clock, readings: Sequence[Mapping[str, int]], error: str | None):
        self.clock = clock
        self.readings = list(readings)
        self.started = clock.now
        self.aborted = False
        self._error = error

    def _index(self) -> int:
        return int(self.clock.now - self.started)

    def done(self) -> bool:
        return self.aborted or self._index() > len(self.readings)

    def progress(self) -> Mapping[str, int] | None:
        i = min(self._index(), len(self.readings)) - 1
        return self.readings[i] if i >= 0 else None

    def abort(self) -> None:
        self.aborted = True

    def error(self) -> str | None:
        return (
            "operation aborted: migration out job: canceled by client"
            if self.aborted
            else (self._error)
        )

    def completed(self) -> Mapping[str, int]:
        return {"time_elapsed_ms": 1000, "downtime_ms": 18}


class Backend:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.blocked: list[str] = []
        self.readings: list[Mapping[str, int]] = [reading(64, 32), reading(64, 0)]
        self.error: str | None = None
        self.begun: list[str] = []
        self.where = "lab1"
        self.evicted: list[str] = []
        self.job: Job | None = None

    def blockers(self, name: str, target: MigrationTarget, *, copy_storage: bool) -> list[str]:
        return list(self.blocked)

    def begin(self, name: str, target: MigrationTarget, *, copy_storage: bool) -> Job:
        self.begun.append(name)
        self.job = Job(self.clock, self.readings, self.error)
        if self.error is None:
            self.where = target.host
        return self.job

    def runs_here(self, name: str) -> bool:
        return self.where == "lab1" and not self.evicted

    def runs_at(self, name: str, target: MigrationTarget) -> bool:
        return self.where == target.host

    def evict(self, name: str) -> None:
        self.evicted.append(name)


class Reporter:
    def __init__(self) -> None:
        self.progress: list[str] = []
        self.events: list[tuple[str, str, str]] = []

    def migrating(self, key: ObjectKey, message: str) -> None:
        self.progress.append(message)

    def ended(self, key: ObjectKey, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


def reading(total_mib: int, remaining_mib: int) -> dict[str, int]:
    return {"data_total": total_mib * MIB, "data_remaining": remaining_mib * MIB, "rate": MIB}


def target_host(name: str) -> HostRecord:
    return dataclasses.replace(host(name), migration_uri=f"qemu+tcp://{name}/system")


World = tuple["Store", "Backend", "Reporter", "Clock", Scope, HostMigrations]


@pytest.fixture
def world() -> World:
    clock = Clock()
    store = Store([target_host("lab1"), target_host("lab2"), target_host("lab3")])
    store.placed[KEY] = Placed(Placement(KEY, "lab1", "scheduled", T0), store._next())
    scope = Scope("lab1", {})
    scope.set_placement(KEY, "lab1")
    backend, reporter = Backend(clock), Reporter()
    host_migrations = HostMigrations(
        scope=scope,
        backend=backend,
        hosts=store,
        placements=store,
        migrations=store,
        watching=None,
        prefix="/p/migrations/",
        revision=lambda: store.revision,
        reporter=reporter,
        clock=clock,
        acting=lambda: True,
        stall_timeout=10.0,
    )
    return store, backend, reporter, clock, scope, host_migrations


def ask(store: Store, key: ObjectKey = KEY, to: str = "lab2", source: str = "lab1") -> None:
    store.request(Migration(key=key, source=source, to=to, requested=T0), 0)


def running(key: str, source: str) -> Migration:
    return Migration(ObjectKey("Domain", key), source, "lab3", T0, state="Running")


def test_limits_are_two_out_of_a_host_and_five_in_the_fleet() -> None:
    two_here = {m.key: m for m in (running("a", "lab1"), running("b", "lab1"))}
    assert "2 migrations running out of lab1" in (migration.over_limit(two_here, "lab1") or "")
    assert migration.over_limit(two_here, "lab2") is None
    five = {m.key: m for m in (running(f"d{i}", f"h{i}") for i in range(5))}
    assert "5 migrations running in the fleet" in (migration.over_limit(five, "lab1") or "")
    finished = {k: dataclasses.replace(m, state="Succeeded") for k, m in five.items()}
    assert migration.over_limit(finished, "lab1") is None


def test_a_migration_moves_the_placement_only_after_libvirt_finished(world: World) -> None:
    store, backend, reporter, _clock, scope, host_migrations = world
    ask(store)
    assert host_migrations.run_once(threaded=False) == 1
    assert backend.begun == ["web"]
    assert store.placed[KEY].placement.host == "lab2"
    done = store.requests[KEY]
    assert done.state == "Succeeded"
    assert done.progress["downtime_ms"] == 18
    assert reporter.events[-1][:2] == ("Normal", "Migrated")
    # The source gave the Domain up: its share no longer holds it, nothing is held.
    assert scope.host_of(KEY) == "lab2" and not scope.held(KEY)


def test_what_blocks_is_named_and_nothing_starts(world: World) -> None:
    store, backend, reporter, _clock, _scope, host_migrations = world
    backend.blocked = ["it has 1 snapshot(s)", "cdrom sda uses /iso/x.iso, a local path"]
    ask(store)
    host_migrations.run_once(threaded=False)
    assert backend.begun == []
    assert store.requests[KEY].state == "Failed"
    assert "cdrom sda uses /iso/x.iso" in store.requests[KEY].reason
    assert store.placed[KEY].placement.host == "lab1"
    assert reporter.events == [("Warning", "MigrationFailed", store.requests[KEY].reason)]


def test_a_target_that_is_not_ready_fails_the_request(world: World) -> None:
    store, backend, _reporter, _clock, _scope, host_migrations = world
    store.host_records["lab2"] = dataclasses.replace(store.host_records["lab2"], ready=False)
    ask(store)
    host_migrations.run_once(threaded=False)
    assert backend.begun == []
    assert store.requests[KEY].reason == "target lab2 is not Ready"


def test_a_request_over_the_limit_waits_pending_with_the_reason(world: World) -> None:
    store, backend, _reporter, _clock, _scope, host_migrations = world
    for name in ("a", "b"):
        store.requests[ObjectKey("Domain", name)] = dataclasses.replace(
            running(name, "lab1"), revision=store._next()
        )
    ask(store)
    host_migrations.run_once(threaded=False)
    assert backend.begun == []
    waiting = store.requests[KEY]
    assert waiting.state == "Pending"
    assert "2 migrations running out of lab1 (at most 2)" in waiting.reason


def test_progress_is_written_at_most_every_few_seconds(world: World) -> None:
    store, backend, reporter, _clock, _scope, host_migrations = world
    backend.readings = [reading(64, 64 - i) for i in range(1, 31)]  # 30 s of steady progress
    ask(store)
    host_migrations.run_once(threaded=False)
    assert store.requests[KEY].state == "Succeeded"
    # Pending->Running, progress writes, the end: 30 s of progress make about 10 writes.
    assert store.updates <= 2 + 30 // migration.REPORT_EVERY + 1
    assert any("MiB of 64.0 MiB remaining" in line for line in reporter.progress)


def test_no_progress_cancels_and_leaves_the_guest_at_the_source(world: World) -> None:
    store, backend, reporter, clock, scope, host_migrations = world
    # Sizing (data_total 0) first, then some progress, then stuck at 20 MiB.
    backend.readings = (
        [{"data_total": 0, "data_remaining": 0}] * 3
        + [
            reading(64, 40),
            reading(64, 20),
        ]
        + [reading(64, 20 + i % 2) for i in range(100)]
    )
    backend.error = "stuck"
    ask(store)
    host_migrations.run_once(threaded=False)
    assert backend.job is not None and backend.job.aborted
    done = store.requests[KEY]
    assert done.state == "Cancelled"
    assert "no progress for 10s" in done.reason
    assert store.placed[KEY].placement.host == "lab1"
    assert reporter.events[-1][1] == "MigrationCancelled"
    assert scope.host_of(KEY) == "lab1" and not scope.held(KEY)  # reconciled here again
    # Cancelled about 10 s after the last new low, not during the sizing.
    assert 15 <= clock.now <= 20


def test_a_lost_placement_compare_after_libvirt_moved_it_follows_the_guest(world: World) -> None:
    store, backend, _reporter, _clock, scope, host_migrations = world
    real_begin = backend.begin

    def begin_and_touch(name: str, target: MigrationTarget, *, copy_storage: bool) -> Job:
        # Someone rewrites the placement (same host) while libvirt migrates.
        was = store.placed[KEY].placement
        store.placed[KEY] = Placed(was, store._next())
        return real_begin(name, target, copy_storage=copy_storage)

    backend.begin = begin_and_touch  # type: ignore[method-assign]
    ask(store)
    host_migrations.run_once(threaded=False)
    assert store.placed[KEY].placement.host == "lab2"  # where libvirt says it runs
    assert "placement had changed meanwhile" in store.requests[KEY].reason
    assert scope.host_of(KEY) == "lab2"


def test_a_guest_gone_but_still_placed_here_stays_held(world: World) -> None:
    store, backend, _reporter, _clock, scope, host_migrations = world

    def never(key: ObjectKey, host: str, reason: str, expected: int | None, now: datetime) -> bool:
        return False

    store.place = never  # type: ignore[method-assign]
    ask(store)
    host_migrations.run_once(threaded=False)
    assert backend.where == "lab2"
    assert store.placed[KEY].placement.host == "lab1"
    # Never reconciled (restarted) here again: the scope keeps it out of this host's share.
    assert scope.held(KEY)


def test_a_restart_request_stops_the_guest_and_unplaces_it(world: World) -> None:
    store, backend, reporter, _clock, scope, host_migrations = world
    store.request(Migration(KEY, "lab1", "", T0, mode="restart"), 0)
    host_migrations.run_once(threaded=False)
    assert backend.evicted == ["web"]
    assert KEY not in store.placed
    assert store.requests[KEY].state == "Succeeded"
    assert scope.host_of(KEY) is None
    assert reporter.events[-1][1] == "Evicted"


def test_a_request_of_another_hosts_domain_is_left_alone(world: World) -> None:
    store, backend, _reporter, _clock, _scope, host_migrations = world
    other = ObjectKey("Domain", "db")
    store.placed[other] = Placed(Placement(other, "lab2", "", T0), store._next())
    ask(store, other, to="lab3", source="lab2")
    assert host_migrations.run_once(threaded=False) == 0
    assert store.requests[other].state == "Pending"
    assert backend.begun == []


def test_an_operator_cancel_aborts_the_running_job_and_the_guest_stays(world: World) -> None:
    store, backend, reporter, clock, scope, host_migrations = world
    backend.readings = [reading(64, 64 - i) for i in range(1, 61)]  # a minute of progress
    backend.error = "not finished"  # libvirt's job would not have ended by itself here
    ask(store)
    sleep = clock.sleep

    def sleep_then_cancel(seconds: float) -> None:
        sleep(seconds)
        if clock.now == 4:  # `kvmrec migrate web --cancel`, meanwhile
            asked = requests.cancel(store, KEY)
            assert asked.state == "Running" and asked.cancel

    clock.sleep = sleep_then_cancel  # type: ignore[method-assign]
    host_migrations.run_once(threaded=False)
    assert backend.job is not None and backend.job.aborted
    assert clock.now == 4  # read at the poll that follows it, not at a progress write
    done = store.requests[KEY]
    assert done.state == "Cancelled" and done.reason.startswith("cancelled by the operator")
    assert store.placed[KEY].placement.host == "lab1"
    assert reporter.events[-1][:2] == ("Warning", "MigrationCancelled")
    assert scope.host_of(KEY) == "lab1" and not scope.held(KEY)
    with pytest.raises(requests.Refused, match="no migration under way"):
        requests.cancel(store, KEY)


@pytest.mark.parametrize(
    ("cancel", "state", "event", "reason"),
    [
        (False, "Failed", "MigrationFailed", "interrupted: kvmrec on the source restarted"),
        (
            True,
            "Cancelled",
            "MigrationCancelled",
            "cancelled by the operator (kvmrec on the source restarted",
        ),
    ],
)
def test_a_running_request_found_after_a_restart_with_the_guest_still_here_ends(
    world: World, cancel: bool, state: str, event: str, reason: str
) -> None:
    store, backend, reporter, _clock, _scope, host_migrations = world
    store.request(dataclasses.replace(running("web", "lab1"), cancel=cancel), 0)
    assert host_migrations.run_once(threaded=False) == 1
    assert backend.begun == []  # nothing started again
    done = store.requests[KEY]
    assert done.state == state and done.reason.startswith(reason)
    assert store.placed[KEY].placement.host == "lab1"
    assert reporter.events == [("Warning", event, done.reason)]


def test_a_running_request_found_after_a_restart_with_the_guest_moved_succeeds(
    world: World,
) -> None:
    store, backend, reporter, _clock, scope, host_migrations = world
    backend.where = "lab3"  # libvirt finished while kvmrec on the source was down
    store.request(running("web", "lab1"), 0)
    assert host_migrations.run_once(threaded=False) == 1
    done = store.requests[KEY]
    assert (done.state, done.reason) == ("Succeeded", "found running on lab3")
    assert store.placed[KEY].placement.host == "lab3"
    assert reporter.events == [("Normal", "Migrated", "found running on lab3")]
    assert scope.host_of(KEY) == "lab3" and not scope.held(KEY)


def test_a_pending_request_cancelled_never_starts(world: World) -> None:
    store, backend, reporter, _clock, _scope, host_migrations = world
    ask(store)
    done = requests.cancel(store, KEY)
    assert done.state == "Cancelled" and "before it started" in done.reason
    assert host_migrations.run_once(threaded=False) == 0
    assert backend.begun == [] and reporter.events == []
    assert store.placed[KEY].placement.host == "lab1"


def test_a_cancel_compares_again_on_a_fresh_read(world: World) -> None:
    store = world[0]
    store.request(running("web", "lab1"), 0)
    update = store.update
    raced: list[int] = []

    def progress_first(m: Migration) -> bool:
        if not raced:  # the source's progress write lands between the read and the write
            raced.append(1)
            current = store.requests[m.key]
            update(dataclasses.replace(current, progress=reading(64, 10)))
        return update(m)

    store.update = progress_first  # type: ignore[method-assign]
    asked = requests.cancel(store, KEY)
    assert asked.cancel and asked.progress == reading(64, 10)  # nothing lost of either
    assert requests.cancel(store, KEY).revision == asked.revision  # asked once: no write


def test_cancel_without_a_migration_under_way_is_refused(world: World) -> None:
    store = world[0]
    with pytest.raises(requests.Refused, match="no migration under way"):
        requests.cancel(store, KEY)
    ask(store)
    store.requests[KEY] = dataclasses.replace(store.requests[KEY], state="Succeeded")
    with pytest.raises(requests.Refused, match="no migration under way"):
        requests.cancel(store, KEY)
