"""The reconcile every kind shares; a kind supplies only what is its own.

    key --> fetch (gone: done) --> parse, observe --> ownership --> decide (the Plan)
        --> blocked: a condition, PermanentError     waiting: a condition, a requeue
        --> act, step by step, an event each --> observe again --> report
        --> Ready / Synced / drift / observedGeneration, with the events, in one write

Deletion (``deletionPolicy``): nothing there, done; not kvmrec's, forget it; still used
by a managed object (its holders), wait; else orphan (unstamp) or delete; then the
object leaves the store. A failure on the way is recorded in status before the engine
retries (recording.py). ``plan`` runs the same fetch, observe and decide and stops: the
dry run and the reconcile cannot disagree. Only this module writes status and events.

A reconcile runs in stages (engine/stages.py): it yields after observing, after each step
and after observing again, so that a worker can run the same stage of several reconciles
back to back; run alone, it is one call.

A kind (reconcilers/kind.py) says how to parse its spec, observe the live object, decide
the steps, act one step and report what it found, and whether the live object is its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Generic

from kvmrec.api.kinds import ADOPT_ANNOTATION, DeletionPolicy, ObjectKey
from kvmrec.backends.errors import BackendError
from kvmrec.engine import stages
from kvmrec.engine.clock import Clock
from kvmrec.engine.contract import PermanentError, Result
from kvmrec.engine.stages import Stages
from kvmrec.reconcilers import adoption, recording
from kvmrec.reconcilers.dependencies import IN_USE_RETRY
from kvmrec.reconcilers.kind import Event, Kind, L, Report, S, StepFailed, Turn
from kvmrec.reconcilers.plans import Plan, Step
from kvmrec.store.base import Store
from kvmrec.store.records import Status, StoredObject

log = logging.getLogger(__name__)

__all__ = ["Done", "Read", "Reconciler", "conflict"]


def conflict(noun: str, name: str) -> Plan:
    """The plan for a live object of the manifest's name that is not kvmrec's."""
    message = (
        f"a {noun} named {name} exists and is not managed by kvmrec; it is left "
        f'alone (annotate the manifest with {ADOPT_ANNOTATION}: "true" to adopt it)'
    )
    return Plan(
        steps=(Step("conflict", detail=message),), blocked=message, blocked_reason="Conflict"
    )


# What a reconcile starts from: the object (None: not in the store) and its status.
Read = tuple[StoredObject | None, Status | None]

# Told after every reconcile: the key, the object as it was read (None: not in the store),
# its status then, and the status the reconcile stored (None: none, or the object is gone).
Done = Callable[[ObjectKey, StoredObject | None, Status | None, Status | None], None]


class Reconciler(Generic[S, L]):
    """Reconciles and plans the objects of one kind."""

    def __init__(
        self,
        kind: Kind[S, L],
        store: Store,
        clock: Clock,
        *,
        on_step: Callable[[ObjectKey, Step], None] | None = None,
        on_done: Done | None = None,
    ) -> None:
        """``on_step``: told of every step the act phase carries out (the dry run's tests).
        ``on_done``: told how each reconcile ended, from what it read and wrote, so that
        what depends on the object is woken without reading it again."""
        self.of = kind
        self.kind = kind.kind
        self._store = store
        self._clock = clock
        self._on_step = on_step
        self.on_done = on_done
        # In a fleet: whether an object is this host's to reconcile (fleet/scope.py);
        # another host's is left alone, unwritten.
        self.scope: Callable[[StoredObject], bool] | None = None

    def _turn(self, obj: StoredObject, status: Status | None) -> Turn[S, L]:
        spec = self.of.parse(obj)
        live = self.of.observe(obj, spec)
        turn = Turn(obj, spec, live, status or Status(), self.of.now(self._clock.wall()))
        if not obj.deleting:
            self.of.prepare(turn)
        return turn

    # -- decide --------------------------------------------------------------------------

    def plan(self, obj: StoredObject, status: Status | None = None) -> Plan:
        """What a reconcile of ``obj`` would do now, without doing any of it."""
        turn = self._turn(obj, status)
        return self._deletion_plan(turn) if obj.deleting else self._decide(turn)

    def _decide(self, turn: Turn[S, L]) -> Plan:
        if turn.live is not None and self.of.owned() and not self._may_change(turn):
            turn.plan = conflict(self.of.noun, turn.name)
        else:
            turn.plan = self.of.decide(turn)
        return turn.plan

    def _may_change(self, turn: Turn[S, L]) -> bool:
        """kvmrec may change the live object: its stamp, or the manifest asks to adopt it."""
        return self.of.stamped(turn) or turn.obj.annotations.get(ADOPT_ANNOTATION) == "true"

    def _deletion_plan(self, turn: Turn[S, L]) -> Plan:
        own = self.of.deletion(turn)
        if own is not None:
            return own
        name = turn.name
        if turn.live is None:
            return Plan()
        # Only the stamp makes an object kvmrec's to delete (reconcilers/adoption.py).
        if not self.of.stamped(turn):
            return Plan(steps=(Step("forget", detail=f"{name} is not kvmrec's; left as it is"),))
        users = ", ".join(str(k) for k in self.of.holders(turn.obj.key))
        if users:
            return Plan(blocked=f"still used by {users}", blocked_reason="InUse")
        if self.of.deletion_policy(turn.spec) is DeletionPolicy.ORPHAN:
            return Plan(steps=(Step("orphan", detail=f"unstamp {name} and leave it"),))
        detail = self.of.removal
        if self.of.adopted(turn):
            detail = adoption.deletion(self.of.noun, name, self.of.removal)
        return Plan(steps=(Step("delete", detail=self.of.delete_detail(turn, detail)),))

    # -- act -----------------------------------------------------------------------------

    def reconcile(self, key: ObjectKey) -> Result:
        return stages.run(self.stages(key))

    def stages(self, key: ObjectKey, read: Read | None = None) -> Stages:
        """The reconcile of ``key``, yielding after it observes, after each step and after
        it observes again (engine/stages.py). ``read``: the object and its status, read
        for a batch of reconciles together; else read here."""
        # The object and its status in one read.
        obj, old = read if read is not None else self._store.get_with_status(key)
        if obj is None:
            old = None
        written: list[Status] = []
        try:
            if obj is None or (self.scope is not None and not self.scope(obj)):
                return Result()
            return (yield from self._reconcile(obj, old, written))
        finally:
            if self.on_done is not None:
                new = written[-1] if written and written[-1] is not _REMOVED else None
                self.on_done(key, obj, old, new)

    def _reconcile(self, obj: StoredObject, old: Status | None, written: list[Status]) -> Stages:
        key = obj.key
        with recording.failures_recorded(
            self._store,
            key,
            old,
            self._clock.wall(),
            unavailable=self.of.unavailable,
            errors=self.of.errors,
            written=written,
        ):
            turn = self._turn(obj, old)
            turn.written = written
            yield
            try:
                if obj.deleting:
                    return self._delete(turn, old)
                return (yield from self._converge(turn, old))
            except StepFailed as exc:
                now = turn.now
                status = recording.failed(
                    turn.status.with_condition("Ready", "False", exc.reason, str(exc), now),
                    exc,
                    now,
                )
                self._commit(turn, old, status, [])
                return Result(requeue_after=exc.retry)

    def _commit(
        self, turn: Turn[S, L], old: Status | None, status: Status, events: list[Event]
    ) -> None:
        recording.commit(self._store, turn.obj.key, old, status, turn.now, events)
        turn.written.append(status)

    def _step(self, turn: Turn[S, L], step: Step, reason: str) -> Event | None:
        """Carry out ``step``; the event that tells of it, if any."""
        if self._on_step is not None:
            self._on_step(turn.obj.key, step)
        said = self.of.act(turn, step)
        if isinstance(said, tuple):
            return said
        return ("Normal", reason, said) if said else None

    def _converge(self, turn: Turn[S, L], old: Status | None) -> Stages:
        now = turn.now
        plan = self._decide(turn)
        if plan.blocked is not None:
            status = recording.blocked(turn.status, plan.blocked_reason, plan.blocked, now)
            self._commit(turn, old, status, turn.events)
            raise PermanentError(plan.blocked)
        if plan.wait is not None and plan.wait_reason in self.of.quiet_waits:
            return Result(requeue_after=plan.wait)
        if plan.wait is not None and plan.wait_reason in self.of.waits:
            # Waiting is not an error: it says what for, and looks again later.
            reason, message = plan.wait_reason, plan.wait_message
            status = replace(
                turn.status.with_condition("Ready", "False", reason, message, now).with_condition(
                    "Synced", "False", reason, message, now
                ),
                observed_generation=turn.obj.generation,
                last_reconcile_time=now,
                last_error=None,
                retries=0,
                drift=(),
            )
            self._commit(turn, old, status, turn.events)
            return Result(requeue_after=plan.wait)

        for step in plan.steps:
            event = self._step(turn, step, self.of.reasons.get(step.action, ""))
            if event is not None:
                turn.events.append(event)
            yield
        if plan.steps:
            turn.live = self.of.observe(turn.obj, turn.spec)
            if turn.live is None:
                raise BackendError(
                    f"{self.of.noun} {turn.name} vanished while it was being converged"
                )
            yield
        report = self.of.report(turn)
        status = self._status(turn, report)
        self._commit(turn, old, status, turn.events)
        self.of.done(turn)
        return Result(requeue_after=report.requeue_after)

    def _status(self, turn: Turn[S, L], report: Report) -> Status:
        ready = "True" if report.ready else "False"
        fields = ", ".join(d.field for d in report.drift)
        synced = ("False", "Drifted", fields) if report.drift else ("True", "Synced", "")
        conditions = turn.status.conditions_with(
            [
                ("Ready", ready, report.reason, report.message),
                *report.conditions,
                ("Synced", *synced),
            ],
            turn.now,
        )
        return replace(
            turn.status,
            conditions=conditions,
            observed_generation=turn.obj.generation,
            drift=report.drift,
            last_reconcile_time=turn.now,
            last_error=report.error,
            retries=0,
            details=report.details,
        )

    # -- deletion ------------------------------------------------------------------------

    def _delete(self, turn: Turn[S, L], old: Status | None) -> Result:
        key, name, now = turn.obj.key, turn.name, turn.now
        plan = self._deletion_plan(turn)
        if plan.blocked is not None:
            status = recording.deletion_held(turn.status, plan.blocked_reason, plan.blocked, now)
            self._commit(turn, old, status, [])
            return Result(requeue_after=IN_USE_RETRY)
        held = self.of.held(turn, plan)
        if held is not None:
            status, wait = held
            self._commit(turn, old, status, turn.events)
            return Result(requeue_after=wait)
        events = list(turn.events)
        for step in plan.steps:
            if step.action == "forget":  # not kvmrec's: nothing is done to it
                if self._on_step is not None:
                    self._on_step(key, step)
                message = f"{self.of.noun} {name} is not managed by kvmrec; left alone"
                events.append(("Warning", "NotOwned", message))
                continue
            reason = {"orphan": "Orphaned", "delete": "Deleted"}.get(step.action, "")
            event = self._step(turn, step, reason or self.of.reasons.get(step.action, ""))
            if event is not None:
                events.append(event)
        self.of.forget(turn)
        for type_, reason, message in events:
            self._store.add_event(key, type_, reason, message, now)
        if not self._store.remove(key):
            # Applied again while it was being deleted: what was done is told above, and
            # the reconcile that follows at once makes it again.
            log.info("%s: its manifest came back while it was being deleted", key)
            return Result(requeue_after=0.0)
        turn.written.append(_REMOVED)
        return Result()


_REMOVED = Status()  # what a turn "wrote" that removed its object
