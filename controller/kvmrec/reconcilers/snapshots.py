"""Snapshots and snapshot policies.

``Snapshot`` is one named snapshot of one domain that exists while its manifest exists.
``SnapshotPolicy`` takes snapshots of the domains it selects on a schedule (cron or an
interval) and prunes them with tiered retention (Proxmox semantics, see
``kvmrec.snapshots.retention``). A missed schedule (host or service down) takes one
catch-up snapshot, not a burst.

Only what kvmrec took under a policy is ever pruned: policy snapshots are named
``kvmrec-<policy>-<time>`` *and* recorded in the store; a snapshot made by hand, by another
policy or by a Snapshot object is never touched.

Snapshots are internal (inside the qcow2 images). Quiescing freezes the guest's file
systems through the QEMU guest agent for the instant of the snapshot: ``auto`` does it when
an agent answers, ``required`` fails (with a condition saying why) when none does, ``never``
does not try. Whether a snapshot was quiesced is recorded with it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime

from kvmrec.api.kinds import ObjectKey, SnapshotPolicySpec, SnapshotSpec
from kvmrec.backends import protocols
from kvmrec.backends.errors import BackendError, Unavailable
from kvmrec.engine.clock import Clock
from kvmrec.engine.workers import Result
from kvmrec.reconcilers import recording
from kvmrec.reconcilers.plans import Plan, Step
from kvmrec.snapshots.retention import Retention, select
from kvmrec.snapshots.schedule import Schedule, local_zone
from kvmrec.store.base import Store
from kvmrec.store.records import Drift, SnapshotRecord, Status, StoredObject

log = logging.getLogger(__name__)

POLICY_PREFIX = "kvmrec-"
WAIT_RETRY = 10.0  # a domain that is not there yet, an agent that does not answer yet


class SnapshotFailed(Exception):
    """A snapshot could not be taken for a reason the operator must see (no agent for a
    required quiesce, memory state of a running guest)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def policy_snapshot_name(policy: str, at: datetime) -> str:
    return f"{POLICY_PREFIX}{policy}-{at.strftime('%Y%m%d-%H%M%S-%f')[:-3]}"


def is_policy_snapshot(policy: str, name: str) -> bool:
    return name.startswith(f"{POLICY_PREFIX}{policy}-")


def take(
    hv: protocols.SnapshotHost,
    domain: str,
    name: str,
    description: str,
    *,
    quiesce: str,
    memory: bool,
) -> bool:
    """Take one snapshot; returns whether the guest's file systems were frozen for it."""
    live = hv.get_domain(domain)
    if live is None:
        raise SnapshotFailed("DomainMissing", f"domain {domain} does not exist")
    running = live.active
    if running and not memory:
        raise SnapshotFailed(
            "MemoryStateRequired",
            f"{domain} is running: QEMU takes internal snapshots of a running guest only with "
            "its memory state (set memory: true, or stop the guest)",
        )
    frozen = False
    if running and quiesce != "never":
        try:
            hv.freeze(domain)
            frozen = True
        except Unavailable:
            raise
        except BackendError as exc:
            if quiesce == "required":
                raise SnapshotFailed(
                    "QuiesceFailed",
                    f"quiesce: required, but the guest agent of {domain} does not answer "
                    f"({exc}); is guestAgent on and qemu-ga running in the guest?",
                ) from exc
    try:
        hv.create_snapshot(domain, name, description)
    finally:
        if frozen:
            hv.thaw(domain)
    # A guest that is shut off has nothing in flight: its disks are as consistent as a
    # frozen guest's.
    return frozen or not running


class SnapshotReconciler:
    kind = "Snapshot"

    def __init__(self, store: Store, hypervisor: protocols.SnapshotHost, clock: Clock) -> None:
        self._store = store
        self._hv = hypervisor
        self._clock = clock

    def plan(self, obj: StoredObject, status: Status | None = None) -> Plan:
        spec = SnapshotSpec.from_spec(obj.spec)
        name = obj.key.name
        if self._hv.get_domain(spec.domain) is None:
            return Plan(steps=(Step("wait", detail=f"domain {spec.domain} does not exist"),))
        exists = any(s.name == name for s in self._hv.list_snapshots(spec.domain))
        if obj.deleting:
            if exists and not spec.keep:
                return Plan(steps=(Step("delete", detail=f"snapshot {name} of {spec.domain}"),))
            return Plan()
        if exists:
            return Plan()
        return Plan(steps=(Step("snapshot", (Drift("spec.domain", spec.domain, None),)),))

    def reconcile(self, key: ObjectKey) -> Result:
        obj = self._store.get(key)
        if obj is None:
            return Result()
        spec = SnapshotSpec.from_spec(obj.spec)
        old = self._store.get_status(key)
        status = old or Status()
        now = self._clock.wall()
        with recording.failures_recorded(
            self._store, key, old, now, unavailable="LibvirtUnavailable"
        ):
            try:
                return self._converge(obj, spec, old, status, now)
            except SnapshotFailed as exc:
                status = recording.failed(
                    status.with_condition("Ready", "False", exc.reason, str(exc), now), exc, now
                )
                recording.commit(self._store, key, old, status, now)
                return Result(requeue_after=WAIT_RETRY)

    def _converge(
        self,
        obj: StoredObject,
        spec: SnapshotSpec,
        old: Status | None,
        status: Status,
        now: datetime,
    ) -> Result:
        key, name = obj.key, obj.key.name
        live = self._hv.get_domain(spec.domain)
        listed = self._hv.list_snapshots(spec.domain) if live else []
        names = {s.name for s in listed}
        if obj.deleting:
            if name in names and not spec.keep:
                self._hv.delete_snapshot(spec.domain, name)
                self._store.add_event(key, "Normal", "Deleted", f"deleted {name}", now)
            self._store.forget_snapshot(spec.domain, name)
            self._store.remove(key)
            return Result()
        if live is None:
            message = f"waiting for domain {spec.domain}"
            status = replace(
                status.with_condition("Ready", "False", "WaitingForDependency", message, now),
                last_reconcile_time=now,
                observed_generation=obj.generation,
            )
            recording.commit(self._store, key, old, status, now)
            return Result(requeue_after=WAIT_RETRY)
        events = []
        if name not in names:
            quiesced = take(
                self._hv,
                spec.domain,
                name,
                spec.description or f"kvmrec Snapshot/{name}",
                quiesce=spec.quiesce,
                memory=spec.memory,
            )
            self._store.record_snapshot(
                SnapshotRecord(spec.domain, name, None, now, quiesced, live.active)
            )
            events.append(
                (
                    "Normal",
                    "Created",
                    f"snapshot {name} of {spec.domain} taken{' (quiesced)' if quiesced else ''}",
                )
            )
        record = next(
            (r for r in self._store.snapshots(domain=spec.domain) if r.name == name), None
        )
        taken = next((s for s in listed if s.name == name), None)
        if taken is None:
            taken = self._hv.get_snapshot(spec.domain, name)
        status = replace(
            status.with_condition("Ready", "True", "Taken", "", now).with_condition(
                "Synced", "True", "Synced", "", now
            ),
            observed_generation=obj.generation,
            last_reconcile_time=now,
            last_error=None,
            retries=0,
            drift=(),
            details={
                "state": "taken",
                "domain": spec.domain,
                "quiesced": record.quiesced if record else None,
                # Why a revert to it cannot succeed (backends/snapshot_state.py), or None.
                "restoreProblem": taken.restore_problem,
            },
        )
        recording.commit(self._store, key, old, status, now, events)
        return Result()


@dataclass(frozen=True)
class _DomainOutcome:
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


class SnapshotPolicyReconciler:
    kind = "SnapshotPolicy"

    def __init__(self, store: Store, hypervisor: protocols.SnapshotHost, clock: Clock) -> None:
        self._store = store
        self._hv = hypervisor
        self._clock = clock

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

    @staticmethod
    def retention(spec: SnapshotPolicySpec) -> Retention:
        return Retention(
            keep_last=spec.keep_last,
            hourly=spec.hourly,
            daily=spec.daily,
            weekly=spec.weekly,
            monthly=spec.monthly,
            yearly=spec.yearly,
        )

    def _records(self, policy: str, domain: str) -> list[SnapshotRecord]:
        """This policy's snapshots of ``domain`` that still exist, newest first (records of
        snapshots deleted by hand are dropped)."""
        existing = {s.name for s in self._hv.list_snapshots(domain)}
        records = []
        for record in self._store.snapshots(policy=policy, domain=domain):
            if record.name in existing and is_policy_snapshot(policy, record.name):
                records.append(record)
            else:
                self._store.forget_snapshot(domain, record.name)
        return records

    def _newest(self, policy: str, domain: str) -> datetime | None:
        """When the newest snapshot recorded for ``policy`` of ``domain`` was taken, for a
        domain of which none could be taken this time: its snapshots can go stale."""
        records = self._store.snapshots(policy=policy, domain=domain)
        return records[0].time.astimezone(local_zone()) if records else None

    def plan(self, obj: StoredObject, status: Status | None = None) -> Plan:
        if obj.deleting:
            return Plan()
        spec = SnapshotPolicySpec.from_spec(obj.spec)
        schedule = Schedule.of(schedule=spec.schedule, every=spec.every)
        now = self._clock.wall().astimezone(local_zone())  # cron reads the host's wall clock
        steps: list[Step] = []
        for domain in self.selected(spec):
            if self._hv.get_domain(domain) is None:
                steps.append(Step("wait", detail=f"domain {domain} does not exist"))
                continue
            existing = {s.name for s in self._hv.list_snapshots(domain)}
            records = [
                r
                for r in self._store.snapshots(policy=obj.key.name, domain=domain)
                if r.name in existing
            ]
            last = records[0].time if records else None
            if schedule.next_due(last, now, since=_since(status, domain, now)) <= now:
                steps.append(Step("snapshot", detail=f"{domain}: due now"))
                records.insert(0, SnapshotRecord(domain, "(new)", obj.key.name, now, False, True))
            decision = select(
                records, lambda r: r.time.astimezone(now.tzinfo), self.retention(spec)
            )
            for record in decision.prune:
                steps.append(Step("prune", detail=f"{domain}: {record.name}"))
        return Plan(steps=tuple(steps))

    def reconcile(self, key: ObjectKey) -> Result:
        obj = self._store.get(key)
        if obj is None:
            return Result()
        old = self._store.get_status(key)
        status = old or Status()
        if obj.deleting:
            # The policy's snapshots stay (nothing asked to delete them); its records too,
            # so that the policy, put back, prunes them again.
            self._store.remove(key)
            return Result()
        spec = SnapshotPolicySpec.from_spec(obj.spec)
        schedule = Schedule.of(schedule=spec.schedule, every=spec.every)
        retention = self.retention(spec)
        now = self._clock.wall().astimezone(local_zone())  # cron reads the host's wall clock
        events: list[tuple[str, str, str]] = []
        outcomes = []
        for domain in self.selected(spec):
            try:
                since = _since(old, domain, now)
                outcomes.append(
                    self._domain(key.name, domain, spec, schedule, retention, now, since, events)
                )
            except SnapshotFailed as exc:
                last = self._newest(key.name, domain)
                outcomes.append(_DomainOutcome(domain, last, None, 0, str(exc), exc.reason, since))
            except Unavailable:
                raise
            except BackendError as exc:
                last = self._newest(key.name, domain)
                outcomes.append(
                    _DomainOutcome(domain, last, None, 0, str(exc), "SnapshotFailed", since)
                )

        errors = [o for o in outcomes if o.error]
        interval = schedule.interval_hint()
        stale = [o.domain for o in outcomes if o.last is not None and now - o.last > 2 * interval]
        if errors:
            first = errors[0]
            message = "; ".join(f"{o.domain}: {o.error}" for o in errors)
            status = status.with_condition("Ready", "False", first.reason or "Failed", message, now)
        else:
            status = status.with_condition("Ready", "True", "Scheduled", "", now)
        if stale:
            status = status.with_condition(
                "Degraded",
                "True",
                "SnapshotsStale",
                f"newest snapshot older than twice the interval ({interval}): " + ", ".join(stale),
                now,
            )
        elif status.condition("Degraded") is not None or outcomes:
            status = status.with_condition("Degraded", "False", "Fresh", "", now)
        status = status.with_condition("Synced", "True", "Synced", "", now)
        nexts = [o.next for o in outcomes if o.next is not None]
        status = replace(
            status,
            observed_generation=obj.generation,
            last_reconcile_time=now,
            last_error=errors[0].error if errors else None,
            retries=0,
            drift=(),
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
        )
        recording.commit(self._store, key, old, status, now, events)
        wait = min((n - now).total_seconds() for n in nexts) if nexts else None
        if errors:
            wait = min(wait or WAIT_RETRY, WAIT_RETRY)
        if wait is None:
            wait = interval.total_seconds()
        return Result(requeue_after=max(wait, 0.2))

    def _domain(
        self,
        policy: str,
        domain: str,
        spec: SnapshotPolicySpec,
        schedule: Schedule,
        retention: Retention,
        now: datetime,
        since: datetime,
        events: list[tuple[str, str, str]],
    ) -> _DomainOutcome:
        live = self._hv.get_domain(domain)
        if live is None:
            raise SnapshotFailed("DomainMissing", f"domain {domain} does not exist")
        records = self._records(policy, domain)
        last = records[0].time if records else None
        if schedule.next_due(last, now, since=since) <= now:
            name = policy_snapshot_name(policy, now)
            quiesced = take(
                self._hv,
                domain,
                name,
                f"kvmrec SnapshotPolicy/{policy}",
                quiesce=spec.quiesce,
                memory=spec.memory,
            )
            record = SnapshotRecord(domain, name, policy, now, quiesced, live.active)
            self._store.record_snapshot(record)
            records.insert(0, record)
            problem = self._hv.get_snapshot(domain, name).restore_problem
            events.append(
                (
                    "Warning" if problem else "Normal",
                    "SnapshotTaken",
                    f"{domain}: {name}{' (quiesced)' if quiesced else ''}"
                    + (f"; it cannot be reverted to: {problem}" if problem else ""),
                )
            )
        decision = select(records, lambda r: r.time.astimezone(now.tzinfo), retention)
        for record in decision.prune:
            self._hv.delete_snapshot(domain, record.name)
            self._store.forget_snapshot(domain, record.name)
            events.append(("Normal", "SnapshotPruned", f"{domain}: {record.name}"))
        kept = list(decision.keep)
        newest = kept[0].time if kept else None
        next_due = schedule.next_due(newest, now, since=since)
        return _DomainOutcome(domain, newest, next_due, len(kept), None, None, since)
