"""Snapshot and SnapshotPolicy reconcilers against libvirt's in-process ``test:///default``.

The test driver takes internal snapshots, and its ``fsFreeze``/``fsThaw`` work on any running
guest (it has no guest agent to ask). A guest whose agent does not answer is therefore made by
replacing ``Hypervisor.freeze`` with what the real one raises then; everything else is the
real ``Hypervisor`` on the real driver.

The driver's state is shared by every connection in the process, so every domain made here is
named ``ut-<random>-...`` and removed again, with its snapshots, by the fixture
(testdriver.py).

Time is a ``FakeClock``; the policy reconciler reads it in the host's local time
(``.astimezone()``), so expected names and retention periods are computed the same way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import libvirt
import pytest
import testdriver
import yaml

from kvmrec.api import manifests
from kvmrec.api.kinds import Manifest, ObjectKey, SnapshotPolicySpec
from kvmrec.backends.errors import BackendError, Unavailable
from kvmrec.engine.workers import Result
from kvmrec.reconcilers.snapshot_policy import SnapshotPolicyReconciler
from kvmrec.reconcilers.snapshots import WAIT_RETRY, SnapshotReconciler, policy_snapshot_name
from kvmrec.snapshots.retention import Retention, select
from kvmrec.store.records import SnapshotRecord

T0 = datetime(2024, 3, 4, 5, 0, tzinfo=UTC)  # a Monday, far from any midnight in most zones
NO_AGENT = "QEMU guest agent is not connected"


@dataclass
class World(testdriver.World):
    policies: SnapshotPolicyReconciler
    snapshots: SnapshotReconciler

    # -- libvirt, by hand ------------------------------------------------------------------

    def domain(self, suffix: str, *, running: bool = True) -> str:
        name = self.name(suffix)
        dom = self.conn.defineXML(
            f"<domain type='test'><name>{name}</name><memory unit='KiB'>65536</memory>"
            "<os><type>hvm</type></os></domain>"
        )
        if running:
            dom.create()
        return name

    def remove_domain(self, name: str) -> None:
        dom = self.conn.lookupByName(name)
        if dom.isActive():
            dom.destroy()
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)

    def hand_snapshot(self, domain: str, name: str) -> None:
        self.conn.lookupByName(domain).snapshotCreateXML(
            f"<domainsnapshot><name>{name}</name></domainsnapshot>",
            libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC,
        )

    def libvirt_snapshots(self, domain: str) -> set[str]:
        return {s.getName() for s in self.conn.lookupByName(domain).listAllSnapshots(0)}

    def policy_snapshots(self, domain: str, policy: str) -> set[str]:
        return {s for s in self.libvirt_snapshots(domain) if s.startswith(f"kvmrec-{policy}-")}

    # -- the store -------------------------------------------------------------------------

    def apply(self, kind: str, name: str, spec: dict[str, Any], **meta: Any) -> ObjectKey:
        """A manifest as the directory source would store it: validated against crds/ and
        defaulted."""
        document = {
            "apiVersion": "kvmrec.io/v1alpha1",
            "kind": kind,
            "metadata": {"name": name, **meta},
            "spec": spec,
        }
        (manifest,) = manifests.parse_file(f"{name}.yaml", yaml.safe_dump(document).encode())
        self.store.apply(manifest, self.clock.wall())
        return manifest.key

    def policy(self, name: str, **spec: Any) -> ObjectKey:
        return self.apply("SnapshotPolicy", name, spec)

    def records(self, **query: Any) -> set[str]:
        return {r.name for r in self.store.snapshots(**query)}

    def record(self, domain: str, name: str) -> SnapshotRecord:
        (record,) = [r for r in self.store.snapshots(domain=domain) if r.name == name]
        return record

    def condition(self, key: ObjectKey, type_: str) -> tuple[str, str]:
        cond = self.status(key).condition(type_)
        assert cond is not None, type_
        return cond.status, cond.reason

    def local(self) -> datetime:
        """Now, as the policy reconciler reads it."""
        return self.clock.wall().astimezone()


@pytest.fixture
def world(tmp_path: Path, conn: Any) -> Iterator[World]:
    with testdriver.opened(tmp_path, conn, wall=T0) as w:
        yield World(
            w.prefix,
            conn,
            w.store,
            w.hv,
            w.clock,
            SnapshotPolicyReconciler(w.store, w.hv, w.clock),
            SnapshotReconciler(w.store, w.hv, w.clock),
        )


def _agent_does_not_answer(world: World, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make ``freeze`` fail as it does for a guest without a guest agent; returns the calls."""
    calls: list[str] = []

    def freeze(name: str) -> int:
        calls.append(name)
        raise BackendError(f"freeze file systems of {name}: {NO_AGENT}")

    monkeypatch.setattr(world.hv, "freeze", freeze)
    return calls


# -- a policy on an interval: take, prune, requeue ---------------------------------------------


def test_every_2s_keep_last_2_prunes_only_its_own(world: World) -> None:
    dom = world.domain("web")
    # Snapshots that are not this policy's: by hand (one even wearing the policy's prefix),
    # and one that another policy took and recorded.
    world.hand_snapshot(dom, "before-upgrade")
    world.hand_snapshot(dom, "kvmrec-often-20000101-000000-000")
    other = "kvmrec-other-20240101-000000-000"
    world.hand_snapshot(dom, other)
    world.store.record_snapshot(
        SnapshotRecord(dom, other, "other", T0 - timedelta(days=30), False, True)
    )
    key = world.policy("often", domains=[dom], every="2s", retention={"keepLast": 2})

    taken: list[datetime] = []
    for _ in range(5):
        taken.append(world.local())
        assert world.policies.reconcile(key) == Result(requeue_after=2.0)
        world.clock.advance(2)

    names = [policy_snapshot_name("often", t) for t in taken]
    assert (
        world.policy_snapshots(dom, "often")
        == {
            "kvmrec-often-20000101-000000-000",  # by hand: never recorded, never pruned
            *names[-2:],
        }
    )
    assert world.records(policy="often") == set(names[-2:])
    assert world.records(policy="other") == {other}
    assert {"before-upgrade", other} <= world.libvirt_snapshots(dom)
    assert len(world.libvirt_snapshots(dom)) == 5

    reasons = world.reasons(key)
    assert reasons.count("SnapshotTaken") == 5
    assert reasons.count("SnapshotPruned") == 3
    pruned = [e.message for e in world.store.events(key) if e.reason == "SnapshotPruned"]
    assert pruned == [f"{dom}: {n}" for n in names[:3]]

    assert world.condition(key, "Ready") == ("True", "Scheduled")
    assert world.condition(key, "Synced") == ("True", "Synced")
    assert world.condition(key, "Degraded") == ("False", "Fresh")
    details = world.status(key).details["domains"][dom]
    assert details["count"] == 2
    assert details["lastError"] is None
    assert datetime.fromisoformat(details["lastSnapshot"]) == taken[-1]
    assert datetime.fromisoformat(details["nextSnapshot"]) == taken[-1] + timedelta(seconds=2)

    # Between two due times nothing is taken, and the requeue is what is left of the interval.
    world.clock.advance(0.5)  # 2.5 s after the last snapshot, so one is due now
    assert world.policies.reconcile(key) == Result(requeue_after=2.0)
    world.clock.advance(0.5)
    before = world.libvirt_snapshots(dom)
    result = world.policies.reconcile(key)
    assert result.requeue_after == pytest.approx(1.5)
    assert world.libvirt_snapshots(dom) == before


def test_every_2s_policy_snapshots_are_quiesced_through_the_test_drivers_freeze(
    world: World,
) -> None:
    dom = world.domain("web")
    key = world.policy("often", domains=[dom], every="2s", retention={"keepLast": 2})
    world.policies.reconcile(key)
    (name,) = world.records(policy="often")
    record = world.record(dom, name)
    assert (record.policy, record.quiesced, record.memory) == ("often", True, True)
    # Frozen for the snapshot and thawed again: nothing is left frozen.
    assert world.conn.lookupByName(dom).fsThaw() == 0
    assert "(quiesced)" in world.store.events(key)[0].message


def test_a_missed_schedule_takes_one_catch_up_snapshot_not_a_burst(world: World) -> None:
    dom = world.domain("db")
    key = world.policy("hourly", domains=[dom], every="1h", retention={"keepLast": 48})
    first = world.local()
    assert world.policies.reconcile(key) == Result(requeue_after=3600.0)

    world.clock.advance(10 * 3600)  # the service was down for ten hours
    catch_up = world.local()
    assert world.policies.reconcile(key) == Result(requeue_after=3600.0)
    assert world.policy_snapshots(dom, "hourly") == {
        policy_snapshot_name("hourly", first),
        policy_snapshot_name("hourly", catch_up),
    }
    assert world.reasons(key).count("SnapshotTaken") == 2

    # And the schedule runs on from the catch-up, not from the missed occurrences.
    world.clock.advance(60)
    result = world.policies.reconcile(key)
    assert result.requeue_after == pytest.approx(3540.0)
    assert len(world.policy_snapshots(dom, "hourly")) == 2


def test_a_cron_policy_waits_for_its_first_occurrence(world: World) -> None:
    """Put in place at 05:00, a nightly policy takes its first snapshot at 03:00, not at once."""
    dom = world.domain("db")
    start = world.local()
    key = world.policy("nightly", domains=[dom], schedule="0 3 * * *", retention={"keepLast": 7})
    result = world.policies.reconcile(key)
    assert world.policy_snapshots(dom, "nightly") == set()
    first = (start + timedelta(days=1)).replace(hour=3, minute=0, second=0, microsecond=0)
    if first - timedelta(days=1) > start:
        first -= timedelta(days=1)
    assert result.requeue_after == pytest.approx((first - start).total_seconds(), abs=1)
    details = world.status(key).details["domains"][dom]
    assert details["nextSnapshot"] == first.isoformat() and details["since"]

    world.clock.advance(result.requeue_after or 0)
    world.policies.reconcile(key)
    assert world.policy_snapshots(dom, "nightly") == {
        policy_snapshot_name("nightly", world.local())
    }


@pytest.fixture(params=["UTC0", "IST-5:30"])
def host_zone(request: pytest.FixtureRequest) -> Iterator[str]:
    """The host's local zone for the test (POSIX TZ strings: no tzdata needed)."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    try:
        yield request.param
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


def test_tiered_retention_over_three_days_matches_select(world: World, host_zone: str) -> None:
    dom = world.domain("db")
    key = world.policy("tiered", domains=[dom], every="1h", retention={"hourly": 2, "daily": 2})
    taken: list[datetime] = []
    for _ in range(72):
        taken.append(world.local())
        world.policies.reconcile(key)
        world.clock.advance(3600)

    retention = Retention(hourly=2, daily=2)
    expected = select(taken, lambda t: t.astimezone(), retention)
    assert len(expected.keep) == 4  # two hours of the last day, then the two days before it
    assert [expected.reasons[t] for t in expected.keep] == ["hourly", "hourly", "daily", "daily"]
    if host_zone != "UTC0":  # days end at local midnight, not at UTC's
        assert select(taken, lambda t: t.astimezone(UTC), retention).keep != expected.keep
    kept = {policy_snapshot_name("tiered", t) for t in expected.keep}
    assert world.policy_snapshots(dom, "tiered") == kept
    assert world.records(policy="tiered") == kept
    assert world.status(key).details["domains"][dom]["count"] == 4
    assert world.reasons(key).count("SnapshotPruned") == 72 - 4


# -- Degraded --------------------------------------------------------------------------------


def test_fresh_snapshots_are_not_degraded(world: World) -> None:
    dom = world.domain("db")
    key = world.policy("hourly", domains=[dom], every="1h", retention={"keepLast": 3})
    world.policies.reconcile(key)
    world.clock.advance(90 * 60)  # 1.5 intervals: due, taken, fresh again
    world.policies.reconcile(key)
    assert world.condition(key, "Degraded") == ("False", "Fresh")
    assert world.condition(key, "Ready") == ("True", "Scheduled")


def test_snapshots_that_cannot_be_taken_go_stale_and_degrade_the_policy(world: World) -> None:
    # memory: false snapshots a guest only while it is shut off; once it runs, none can be
    # taken, and after twice the interval the newest one is stale.
    dom = world.domain("db", running=False)
    key = world.policy("hourly", domains=[dom], every="1h", memory=False, retention={"keepLast": 3})
    world.policies.reconcile(key)
    assert len(world.records(policy="hourly")) == 1
    world.conn.lookupByName(dom).create()

    world.clock.advance(3600)
    assert world.policies.reconcile(key) == Result(requeue_after=WAIT_RETRY)
    assert world.condition(key, "Ready") == ("False", "MemoryStateRequired")
    assert world.condition(key, "Degraded") == ("False", "Fresh")  # one interval: not yet

    world.clock.advance(2 * 3600)
    world.policies.reconcile(key)
    assert world.condition(key, "Ready") == ("False", "MemoryStateRequired")
    assert world.condition(key, "Degraded") == ("True", "SnapshotsStale")
    assert dom in world.status(key).condition("Degraded").message  # type: ignore[union-attr]
    assert "SnapshotsStale" in world.reasons(key)

    # Shut off again: a snapshot is taken and the policy is healthy.
    world.conn.lookupByName(dom).destroy()
    world.clock.advance(1)
    world.policies.reconcile(key)
    assert world.condition(key, "Ready") == ("True", "Scheduled")
    assert world.condition(key, "Degraded") == ("False", "Fresh")
    assert len(world.records(policy="hourly")) == 2


def test_a_removed_domain_is_reported_missing_and_its_snapshots_stale(world: World) -> None:
    dom = world.domain("db")
    key = world.policy("hourly", domains=[dom], every="1h", retention={"keepLast": 3})
    world.policies.reconcile(key)
    world.remove_domain(dom)
    world.clock.advance(3 * 3600)

    assert world.policies.reconcile(key) == Result(requeue_after=WAIT_RETRY)
    assert world.condition(key, "Ready") == ("False", "DomainMissing")
    assert world.condition(key, "Degraded") == ("True", "SnapshotsStale")
    status = world.status(key)
    assert status.last_error == f"domain {dom} does not exist"
    details = status.details["domains"][dom]
    assert details["lastError"] == f"domain {dom} does not exist"
    assert datetime.fromisoformat(details["lastSnapshot"]) == T0
    assert details["nextSnapshot"] is None


# -- which domains a policy covers -------------------------------------------------------------


def test_selector_match_labels_and_explicit_domains(world: World) -> None:
    names = {s: world.domain(s, running=False) for s in ("db1", "db2", "web", "gone", "named")}
    labels = {
        "db1": {"tier": "db", "env": "prod"},
        "db2": {"tier": "db", "env": "test"},
        "web": {"tier": "web", "env": "prod"},
        "gone": {"tier": "db", "env": "prod"},
    }
    for suffix, domain_labels in labels.items():
        world.store.apply(
            Manifest(
                "Domain",
                names[suffix],
                {"memory": "64Mi"},
                f"{suffix}.yaml",
                1,
                labels=domain_labels,
            ),
            world.clock.wall(),
        )
    world.store.mark_deleting(ObjectKey("Domain", names["gone"]), world.clock.wall())
    key = world.apply(
        "SnapshotPolicy",
        "prod-db",
        {
            "selector": {"matchLabels": {"tier": "db", "env": "prod"}},
            "domains": [names["named"], names["db1"]],
            "every": "1h",
            "retention": {"keepLast": 1},
        },
    )
    obj = world.store.get(key)
    assert obj is not None
    selected = world.policies.selected(SnapshotPolicySpec.from_spec(obj.spec))
    assert selected == [names["named"], names["db1"]]  # explicit first, db1 only once

    world.policies.reconcile(key)
    snapped = {s for s, n in names.items() if world.policy_snapshots(n, "prod-db")}
    assert snapped == {"named", "db1"}
    assert world.status(key).details["state"] == "2 domain(s)"

    # A label put on later brings a domain in.
    world.store.apply(
        Manifest("Domain", names["db2"], {"memory": "64Mi"}, "db2.yaml", 1, labels=labels["db1"]),
        world.clock.wall(),
    )
    world.clock.advance(1)
    world.policies.reconcile(key)
    assert len(world.policy_snapshots(names["db2"], "prod-db")) == 1
    assert set(world.status(key).details["domains"]) == {names["named"], names["db1"], names["db2"]}


# -- quiesce and memory ----------------------------------------------------------------------


def test_quiesce_required_without_an_answering_agent_takes_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    dom = world.domain("db")
    calls = _agent_does_not_answer(world, monkeypatch)
    key = world.policy(
        "strict", domains=[dom], every="1h", quiesce="required", retention={"keepLast": 3}
    )
    assert world.policies.reconcile(key) == Result(requeue_after=WAIT_RETRY)
    assert calls == [dom]
    assert world.libvirt_snapshots(dom) == set()
    assert world.records() == set()
    assert world.condition(key, "Ready") == ("False", "QuiesceFailed")
    message = world.status(key).condition("Ready").message  # type: ignore[union-attr]
    assert "quiesce: required" in message and NO_AGENT in message
    assert "SnapshotTaken" not in world.reasons(key)

    snap = world.apply("Snapshot", "strict-one", {"domain": dom, "quiesce": "required"})
    assert world.snapshots.reconcile(snap) == Result(requeue_after=WAIT_RETRY)
    assert world.condition(snap, "Ready") == ("False", "QuiesceFailed")
    assert world.libvirt_snapshots(dom) == set()


def test_quiesce_auto_without_an_agent_takes_an_unquiesced_snapshot(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    dom = world.domain("db")
    _agent_does_not_answer(world, monkeypatch)
    key = world.policy("lenient", domains=[dom], every="1h", retention={"keepLast": 3})
    world.policies.reconcile(key)
    (name,) = world.policy_snapshots(dom, "lenient")
    record = world.record(dom, name)
    assert (record.quiesced, record.memory) == (False, True)
    assert world.condition(key, "Ready") == ("True", "Scheduled")
    taken = [e for e in world.store.events(key) if e.reason == "SnapshotTaken"]
    assert [e.message for e in taken] == [f"{dom}: {name}"]  # no "(quiesced)"

    snap = world.apply("Snapshot", "lenient-one", {"domain": dom})
    world.snapshots.reconcile(snap)
    assert world.record(dom, "lenient-one").quiesced is False
    assert world.status(snap).details["quiesced"] is False


def test_quiesce_never_does_not_ask_the_agent(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    dom = world.domain("db")
    calls = _agent_does_not_answer(world, monkeypatch)
    key = world.policy(
        "never", domains=[dom], every="1h", quiesce="never", retention={"keepLast": 3}
    )
    world.policies.reconcile(key)
    assert calls == []
    (name,) = world.policy_snapshots(dom, "never")
    assert world.record(dom, name).quiesced is False


def test_a_shut_off_guest_counts_as_quiesced_without_asking_an_agent(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    dom = world.domain("db", running=False)
    calls = _agent_does_not_answer(world, monkeypatch)
    key = world.policy(
        "strict", domains=[dom], every="1h", quiesce="required", retention={"keepLast": 3}
    )
    world.policies.reconcile(key)
    assert calls == []
    (name,) = world.policy_snapshots(dom, "strict")
    record = world.record(dom, name)
    assert (record.quiesced, record.memory) == (True, False)
    assert world.condition(key, "Ready") == ("True", "Scheduled")


def test_memory_false_refuses_a_running_guest_and_snapshots_a_shut_off_one(
    world: World,
) -> None:
    running = world.domain("up")
    stopped = world.domain("down", running=False)
    key = world.policy(
        "disk-only",
        domains=[running, stopped],
        every="1h",
        memory=False,
        retention={"keepLast": 3},
    )
    assert world.policies.reconcile(key) == Result(requeue_after=WAIT_RETRY)
    assert world.libvirt_snapshots(running) == set()
    assert len(world.policy_snapshots(stopped, "disk-only")) == 1
    assert world.condition(key, "Ready") == ("False", "MemoryStateRequired")
    domains = world.status(key).details["domains"]
    assert domains[stopped]["count"] == 1 and domains[stopped]["lastError"] is None
    assert domains[running]["count"] == 0
    assert "is running" in domains[running]["lastError"]

    up = world.apply("Snapshot", "up-one", {"domain": running, "memory": False})
    assert world.snapshots.reconcile(up) == Result(requeue_after=WAIT_RETRY)
    assert world.condition(up, "Ready") == ("False", "MemoryStateRequired")
    down = world.apply("Snapshot", "down-one", {"domain": stopped, "memory": False})
    assert world.snapshots.reconcile(down) == Result()
    assert "down-one" in world.libvirt_snapshots(stopped)
    assert world.condition(down, "Ready") == ("True", "Taken")


# -- the Snapshot kind -----------------------------------------------------------------------


def test_a_snapshot_is_taken_once_and_recorded(world: World) -> None:
    dom = world.domain("db")
    key = world.apply("Snapshot", "pre-upgrade", {"domain": dom, "description": "before 2.0"})
    assert world.snapshots.reconcile(key) == Result()
    assert world.libvirt_snapshots(dom) == {"pre-upgrade"}
    snap = world.conn.lookupByName(dom).snapshotLookupByName("pre-upgrade")
    xml = snap.getXMLDesc(0)
    assert "<description>before 2.0</description>" in xml
    record = world.record(dom, "pre-upgrade")
    assert (record.policy, record.quiesced, record.memory) == (None, True, True)
    assert record.time == world.clock.wall()
    status = world.status(key)
    assert world.condition(key, "Ready") == ("True", "Taken")
    assert status.observed_generation == 1
    assert status.details == {
        "state": "taken",
        "domain": dom,
        "quiesced": True,
        "restoreProblem": None,
    }
    events = len(world.store.events(key))
    assert "Created" in world.reasons(key)

    world.clock.advance(60)
    assert world.snapshots.reconcile(key) == Result()
    assert world.libvirt_snapshots(dom) == {"pre-upgrade"}
    assert world.conn.lookupByName(dom).snapshotLookupByName("pre-upgrade").getXMLDesc(0) == xml
    assert len(world.store.events(key)) == events
    assert world.record(dom, "pre-upgrade").time == T0

    # A policy on the same domain never prunes it.
    policy = world.policy("often", domains=[dom], every="2s", retention={"keepLast": 1})
    for _ in range(3):
        world.policies.reconcile(policy)
        world.clock.advance(2)
    assert "pre-upgrade" in world.libvirt_snapshots(dom)
    assert len(world.policy_snapshots(dom, "often")) == 1


def test_a_snapshot_deleted_by_hand_is_taken_again(world: World) -> None:
    dom = world.domain("db")
    key = world.apply("Snapshot", "pinned", {"domain": dom})
    world.snapshots.reconcile(key)
    world.conn.lookupByName(dom).snapshotLookupByName("pinned").delete(0)
    world.clock.advance(1)
    world.snapshots.reconcile(key)
    assert world.libvirt_snapshots(dom) == {"pinned"}
    assert world.reasons(key).count("Created") == 2


def test_a_deleted_snapshot_manifest_deletes_the_snapshot(world: World) -> None:
    dom = world.domain("db")
    key = world.apply("Snapshot", "temp", {"domain": dom})
    world.snapshots.reconcile(key)
    world.hand_snapshot(dom, "mine")
    assert world.store.mark_deleting(key, world.clock.wall())

    assert world.snapshots.reconcile(key) == Result()
    assert world.libvirt_snapshots(dom) == {"mine"}
    assert world.records() == set()
    assert world.store.get(key) is None
    assert world.store.get_status(key) is None
    assert world.reasons(key)[-1] == "Deleted"
    assert world.snapshots.reconcile(key) == Result()  # gone: nothing to do


def test_deletion_policy_retain_keeps_the_snapshot(world: World) -> None:
    dom = world.domain("db")
    key = world.apply("Snapshot", "keeper", {"domain": dom, "deletionPolicy": "Retain"})
    world.snapshots.reconcile(key)
    world.store.mark_deleting(key, world.clock.wall())
    assert world.snapshots.reconcile(key) == Result()
    assert world.libvirt_snapshots(dom) == {"keeper"}
    assert world.store.get(key) is None
    assert "Deleted" not in world.reasons(key)


def test_a_snapshot_of_a_missing_domain_waits_for_it(world: World) -> None:
    dom = world.name("later")
    key = world.apply("Snapshot", "first", {"domain": dom})
    assert world.snapshots.reconcile(key) == Result(requeue_after=WAIT_RETRY)
    assert world.condition(key, "Ready") == ("False", "WaitingForDependency")
    assert world.status(key).observed_generation == 1
    assert world.records() == set()

    world.domain("later")
    world.clock.advance(WAIT_RETRY)
    assert world.snapshots.reconcile(key) == Result()
    assert world.libvirt_snapshots(dom) == {"first"}
    assert world.condition(key, "Ready") == ("True", "Taken")


def test_a_snapshot_manifest_deleted_with_its_domain_gone_is_just_forgotten(
    world: World,
) -> None:
    dom = world.domain("db")
    key = world.apply("Snapshot", "orphan", {"domain": dom})
    world.snapshots.reconcile(key)
    world.remove_domain(dom)
    world.store.mark_deleting(key, world.clock.wall())
    assert world.snapshots.reconcile(key) == Result()
    assert world.store.get(key) is None
    assert world.records() == set()


# -- plan ------------------------------------------------------------------------------------


def _state(world: World, key: ObjectKey, domains: list[str]) -> Any:
    return (
        {d: world.libvirt_snapshots(d) for d in domains},
        world.records(),
        world.store.get_status(key),
        len(world.store.events(key, limit=1000)),
        world.store.get(key),
    )


def test_policy_plan_lists_the_due_snapshot_and_the_prunes_and_changes_nothing(
    world: World,
) -> None:
    dom = world.domain("db")
    missing = world.name("missing")
    key = world.policy("often", domains=[dom, missing], every="2s", retention={"keepLast": 2})
    for _ in range(2):
        world.policies.reconcile(key)
        world.clock.advance(2)
    oldest = min(world.records(policy="often"))
    obj = world.store.get(key)
    assert obj is not None

    before = _state(world, key, [dom])
    plan = world.policies.plan(obj)
    assert [(s.action, s.detail) for s in plan.steps] == [
        ("snapshot", f"{dom}: due now"),
        ("prune", f"{dom}: {oldest}"),
        ("wait", f"domain {missing} does not exist"),
    ]
    assert _state(world, key, [dom]) == before

    # The reconcile does what the plan said.
    world.policies.reconcile(key)
    assert oldest not in world.libvirt_snapshots(dom)
    assert len(world.policy_snapshots(dom, "often")) == 2

    # Right after it, nothing is due for the domain that exists.
    obj = world.store.get(key)
    assert obj is not None
    assert [s.action for s in world.policies.plan(obj).steps] == ["wait"]


def test_snapshot_plan(world: World) -> None:
    dom = world.domain("db")
    key = world.apply("Snapshot", "planned", {"domain": dom})
    obj = world.store.get(key)
    assert obj is not None
    before = _state(world, key, [dom])
    assert [s.action for s in world.snapshots.plan(obj).steps] == ["snapshot"]
    assert _state(world, key, [dom]) == before

    world.snapshots.reconcile(key)
    assert world.snapshots.plan(obj).steps == ()
    world.store.mark_deleting(key, world.clock.wall())
    deleting = world.store.get(key)
    assert deleting is not None
    assert [s.action for s in world.snapshots.plan(deleting).steps] == ["delete"]
    assert world.libvirt_snapshots(dom) == {"planned"}

    waiting = world.apply("Snapshot", "waiting", {"domain": world.name("nope")})
    obj = world.store.get(waiting)
    assert obj is not None
    assert [s.action for s in world.snapshots.plan(obj).steps] == ["wait"]


# -- libvirt away ------------------------------------------------------------------------------


def _libvirt_away(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every call into libvirt fails as it does while libvirtd is down."""

    def away(*_args: Any, **_kwargs: Any) -> Any:
        raise Unavailable("cannot reach libvirt: Failed to connect socket")

    for call in ("get_domain", "list_snapshots", "get_snapshot", "create_snapshot"):
        monkeypatch.setattr(world.hv, call, away)


def test_a_policy_reconcile_with_libvirt_away_records_it_in_status(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    dom = world.domain("web")
    key = world.policy("often", domains=[dom], every="2s", retention={"keepLast": 2})
    _libvirt_away(world, monkeypatch)
    with pytest.raises(Unavailable):
        world.policies.reconcile(key)
    assert world.condition(key, "Ready") == ("Unknown", "LibvirtUnavailable")
    status = world.status(key)
    assert status.retries == 1 and "Failed to connect socket" in (status.last_error or "")

    monkeypatch.undo()
    world.policies.reconcile(key)
    assert world.condition(key, "Ready") == ("True", "Scheduled")
    assert world.status(key).retries == 0


def test_a_snapshot_reconcile_with_libvirt_away_records_it_in_status(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    dom = world.domain("db")
    key = world.apply("Snapshot", "pinned", {"domain": dom})
    _libvirt_away(world, monkeypatch)
    with pytest.raises(Unavailable):
        world.snapshots.reconcile(key)
    assert world.condition(key, "Ready") == ("Unknown", "LibvirtUnavailable")
    assert world.status(key).retries == 1
    assert world.libvirt_snapshots(dom) == set()


def test_a_host_selector_plans_nothing_on_a_single_host(world: World) -> None:
    """A policy's hostSelector says on which hosts of a fleet it runs: one host ignores it."""
    dom = world.domain("db")
    spec: dict[str, Any] = {"domains": [dom], "every": "1h", "retention": {"keepLast": 2}}
    key = world.policy("hourly", **spec)
    world.policies.reconcile(key)
    assert len(world.policy_snapshots(dom, "hourly")) == 1
    world.clock.advance(60)
    world.policy("hourly", **spec, hostSelector={"matchLabels": {"zone": "b"}})
    obj = world.store.get(key)
    assert obj is not None and obj.generation == 2
    assert list(world.policies.plan(obj).steps) == []
    world.policies.reconcile(key)
    assert len(world.policy_snapshots(dom, "hourly")) == 1
    assert world.condition(key, "Ready")[0] == "True"
