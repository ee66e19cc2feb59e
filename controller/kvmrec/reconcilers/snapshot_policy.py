"""The SnapshotPolicy kind: snapshots of the domains it selects, on a schedule, pruned.

A policy takes snapshots of the domains it selects (by name, or managed domains by label)
on a schedule (cron or an interval) and prunes them with tiered retention (Proxmox
semantics, ``kvmrec.snapshots.retention``). A missed schedule (host or service down) takes
one catch-up snapshot, not a burst.

Only what kvmrec took under a policy is ever pruned: policy snapshots are named
``kvmrec-<policy>-<time>`` *and* recorded in the store's snapshot ledger; a snapshot made
by hand, by another policy or by a Snapshot object is never touched.

decide: per domain, ``snapshot`` when one is due and ``prune`` for each snapshot the
retention lets go (counting the one about to be taken), or ``wait`` for a domain that is
not there; ``kvmrec plan`` prints exactly these. A domain whose snapshot fails keeps its
snapshots; the others go on, and ``Ready`` names what failed. Deleting a policy keeps its
snapshots and their records, so that the policy, put back, prunes them again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from kvmrec.api.kinds import ObjectKey, SnapshotPolicySpec
from kvmrec.backends import protocols
from kvmrec.backends.errors import BackendError, Unavailable
from kvmrec.engine.clock import Clock
from kvmrec.reconcilers.kind import Event, Kind, Report, Turn
from kvmrec.reconcilers.plans import Plan, Step
from kvmrec.reconcilers.reconciling import Reconciler
from kvmrec.reconcilers.snapshots import (
    WAIT_RETRY,
    SnapshotFailed,
    is_policy_snapshot,
    policy_snapshot_name,
    take,
)
from kvmrec.snapshots.retention import Retention, select
from kvmrec.snapshots.schedule import Schedule, local_zone
from kvmrec.store.base import Store
from kvmrec.store.records import SnapshotRecord, Status, StoredObject


def retention(spec: SnapshotPolicySpec) -> Retention:
    return Retention(
        keep_last=spec.keep_last,
        hourly=spec.hourly,
        daily=spec.daily,
        weekly=spec.weekly,
        monthly=spec.monthly,
        yearly=spec.yearly,
    )


@dataclass(frozen=True)
class Covered:
    """One domain a policy covers, as it is: None for one that does not exist."""

    domain: str
    running: bool | None
    records: tuple[SnapshotRecord, ...]  # the policy's that still exist, newest first


@dataclass(frozen=True)
class PolicyLive:
    domains: tuple[Covered, ...]


@dataclass(frozen=True)
class _Outcome:
    domain: str
    last: datetime | None
    next: datetime | None
    count: int
    error: str | None
    reason: str | None
    since: datetime  # when the policy first applied to the domain


def _since(status: Status | None, domain: str, now: datetime) -> datetime:
    """When the policy began to apply to ``domain``: a cron schedule's first snapshot is
    its first occurrence after that, not one at once (an interval's is at once)."""
    seen = ((status.details.get("domains") or {}) if status else {}).get(domain) or {}
    return datetime.fromisoformat(seen["since"]) if seen.get("since") else now


class SnapshotPolicy(Kind[SnapshotPolicySpec, PolicyLive]):
    kind = "SnapshotPolicy"
    noun = "snapshot policy"
    reasons: ClassVar[Mapping[str, str]] = {
        "snapshot": "SnapshotTaken",
        "prune": "SnapshotPruned",
        "wait": "DomainMissing",
    }

    def __init__(self, hypervisor: protocols.SnapshotHost, store: Store) -> None:
        self._hv = hypervisor
        self._store = store  # the Domain objects (for labels) and the snapshot ledger

    def owned(self) -> bool:
        return False

    def now(self, wall: datetime) -> datetime:
        return wall.astimezone(local_zone())  # cron reads the host's wall clock

    def parse(self, obj: StoredObject) -> SnapshotPolicySpec:
        return SnapshotPolicySpec.from_spec(obj.spec)

    def selected(self, spec: SnapshotPolicySpec) -> list[str]:
        """The domains a policy covers: named ones, and managed ones whose labels match."""
        names = list(spec.domains)
        if spec.match_labels:
            for obj in self._store.list("Domain"):
                if obj.deleting or obj.key.name in names:
                    continue
                if all(obj.labels.get(k) == v for k, v in spec.match_labels.items()):
                    names.append(obj.key.name)
        return names

    def observe(self, obj: StoredObject, spec: SnapshotPolicySpec) -> PolicyLive:
        if obj.deleting:
            return PolicyLive(())  # its snapshots stay: nothing to look at
        covered = []
        for domain in self.selected(spec):
            live = self._hv.get_domain(domain)
            if live is None:
                covered.append(Covered(domain, None, ()))
                continue
            existing = {s.name for s in self._hv.list_snapshots(domain)}
            records = tuple(
                r
                for r in self._store.snapshots(policy=obj.key.name, domain=domain)
                if r.name in existing and is_policy_snapshot(obj.key.name, r.name)
            )
            covered.append(Covered(domain, live.active, records))
        return PolicyLive(tuple(covered))

    # -- decide --------------------------------------------------------------------------

    def decide(self, turn: Turn[SnapshotPolicySpec, PolicyLive]) -> Plan:
        assert turn.live is not None
        spec, now, policy = turn.spec, turn.now, turn.name
        schedule = Schedule.of(schedule=spec.schedule, every=spec.every)
        steps: list[Step] = []
        for index, covered in enumerate(turn.live.domains):
            domain = covered.domain
            if covered.running is None:
                steps.append(Step("wait", detail=f"domain {domain} does not exist", item=index))
                continue
            records = list(covered.records)
            last = records[0].time if records else None
            if schedule.next_due(last, now, since=_since(turn.status, domain, now)) <= now:
                steps.append(Step("snapshot", detail=f"{domain}: due now", item=index))
                records.insert(0, SnapshotRecord(domain, "(new)", policy, now, False, True))
            decision = select(records, lambda r: r.time.astimezone(now.tzinfo), retention(spec))
            for record in decision.prune:
                steps.append(Step("prune", detail=f"{domain}: {record.name}", item=index))
        return Plan(steps=tuple(steps))

    # -- act -----------------------------------------------------------------------------

    def act(self, turn: Turn[SnapshotPolicySpec, PolicyLive], step: Step) -> str | Event:
        assert turn.live is not None and step.item is not None
        covered = turn.live.domains[step.item]
        domain = covered.domain
        errors: dict[str, tuple[str, str]] = turn.notes.setdefault("errors", {})
        if domain in errors:
            return ""  # its snapshot failed: its old ones are not pruned either
        match step.action:
            case "wait":
                errors[domain] = ("DomainMissing", f"domain {domain} does not exist")
                return ""
            case "snapshot":
                try:
                    return self._take(turn, domain, bool(covered.running))
                except SnapshotFailed as exc:
                    errors[domain] = (exc.reason, str(exc))
                except Unavailable:
                    raise
                except BackendError as exc:
                    errors[domain] = ("SnapshotFailed", str(exc))
                return ""
            case "prune":
                name = step.detail.removeprefix(f"{domain}: ")
                self._hv.delete_snapshot(domain, name)
                self._store.forget_snapshot(domain, name)
                return f"{domain}: {name}"
        raise AssertionError(f"unknown step {step.action}")

    def _take(
        self, turn: Turn[SnapshotPolicySpec, PolicyLive], domain: str, running: bool
    ) -> Event:
        spec, policy, now = turn.spec, turn.name, turn.now
        name = policy_snapshot_name(policy, now)
        quiesced = take(
            self._hv,
            domain,
            name,
            f"kvmrec SnapshotPolicy/{policy}",
            quiesce=spec.quiesce,
            memory=spec.memory,
        )
        self._store.record_snapshot(SnapshotRecord(domain, name, policy, now, quiesced, running))
        problem = self._hv.get_snapshot(domain, name).restore_problem
        message = f"{domain}: {name}{' (quiesced)' if quiesced else ''}"
        if problem:
            return ("Warning", "SnapshotTaken", f"{message}; it cannot be reverted to: {problem}")
        return ("Normal", "SnapshotTaken", message)

    # -- report --------------------------------------------------------------------------

    def report(self, turn: Turn[SnapshotPolicySpec, PolicyLive]) -> Report:
        assert turn.live is not None
        spec, now, policy = turn.spec, turn.now, turn.name
        schedule = Schedule.of(schedule=spec.schedule, every=spec.every)
        errors: dict[str, tuple[str, str]] = turn.notes.get("errors", {})
        outcomes = []
        for covered in turn.live.domains:
            domain = covered.domain
            since = _since(turn.status, domain, now)
            if domain in errors or covered.running is None:
                reason, error = errors.get(
                    domain, ("DomainMissing", f"domain {domain} does not exist")
                )
                # Its newest recorded snapshot, for staleness: none could be taken now.
                records = self._store.snapshots(policy=policy, domain=domain)
                last = records[0].time.astimezone(local_zone()) if records else None
                outcomes.append(_Outcome(domain, last, None, 0, error, reason, since))
                continue
            kept = self._kept(policy, covered)
            newest = kept[0].time if kept else None
            next_due = schedule.next_due(newest, now, since=since)
            outcomes.append(_Outcome(domain, newest, next_due, len(kept), None, None, since))
        return self._report(turn, schedule, outcomes)

    def _kept(self, policy: str, covered: Covered) -> list[SnapshotRecord]:
        """The policy's snapshots of the domain, newest first; records of snapshots deleted
        by hand are dropped from the ledger."""
        existing = {s.name for s in self._hv.list_snapshots(covered.domain)}
        kept = []
        for record in self._store.snapshots(policy=policy, domain=covered.domain):
            if record.name in existing and is_policy_snapshot(policy, record.name):
                kept.append(record)
            else:
                self._store.forget_snapshot(covered.domain, record.name)
        return kept

    @staticmethod
    def _report(
        turn: Turn[SnapshotPolicySpec, PolicyLive], schedule: Schedule, outcomes: list[_Outcome]
    ) -> Report:
        now = turn.now
        failed = [o for o in outcomes if o.error]
        interval = schedule.interval_hint()
        stale = [o.domain for o in outcomes if o.last is not None and now - o.last > 2 * interval]
        conditions: list[tuple[str, str, str, str]] = []
        if stale:
            message = f"newest snapshot older than twice the interval ({interval}): "
            conditions.append(("Degraded", "True", "SnapshotsStale", message + ", ".join(stale)))
        elif turn.status.condition("Degraded") is not None or outcomes:
            conditions.append(("Degraded", "False", "Fresh", ""))
        nexts = [o.next for o in outcomes if o.next is not None]
        wait = min((n - now).total_seconds() for n in nexts) if nexts else None
        if failed:
            wait = min(wait or WAIT_RETRY, WAIT_RETRY)
        if wait is None:
            wait = interval.total_seconds()
        return Report(
            not failed,
            (failed[0].reason or "Failed") if failed else "Scheduled",
            "; ".join(f"{o.domain}: {o.error}" for o in failed),
            details={
                "state": f"{len(outcomes)} domain(s)",
                "domains": {
                    o.domain: {
                        "lastSnapshot": o.last.isoformat() if o.last else None,
                        "nextSnapshot": o.next.isoformat() if o.next else None,
                        "count": o.count,
                        "lastError": o.error,
                        "since": o.since.isoformat(),
                    }
                    for o in outcomes
                },
            },
            requeue_after=max(wait, 0.2),
            conditions=tuple(conditions),
            error=failed[0].error if failed else None,
        )

    # -- deletion ------------------------------------------------------------------------

    def deletion(self, turn: Turn[SnapshotPolicySpec, PolicyLive]) -> Plan:
        return Plan()  # its snapshots stay (nothing asked to delete them), their records too


class SnapshotPolicyReconciler(Reconciler[SnapshotPolicySpec, PolicyLive]):
    def __init__(
        self,
        store: Store,
        hypervisor: protocols.SnapshotHost,
        clock: Clock,
        *,
        on_step: Callable[[ObjectKey, Step], None] | None = None,
    ) -> None:
        self._policy = SnapshotPolicy(hypervisor, store)
        super().__init__(self._policy, store, clock, on_step=on_step)

    def selected(self, spec: SnapshotPolicySpec) -> list[str]:
        return self._policy.selected(spec)

    @staticmethod
    def retention(spec: SnapshotPolicySpec) -> Retention:
        return retention(spec)
