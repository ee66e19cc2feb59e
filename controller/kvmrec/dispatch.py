"""The reconciles the workers hand over, and what follows each once its outcome is stored.

One key runs alone; several run interleaved stage by stage (engine/stages.py) and their
final writes go to the store together (recording.store_deferred). Either way each
reconcile's last status write, its events and its history record are stored before the
key is released and before what depends on the object is woken: a dependency that became
Ready wakes the Domains waiting for it, a deletion wakes what it held (the kinds declare
who wakes whom, reconcilers/registry.py). In a fleet, a host fenced off its lease acts on
nothing until it rejoins.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Sequence

from kvmrec import logs
from kvmrec.api.kinds import ObjectKey
from kvmrec.engine import stages
from kvmrec.engine.clock import Clock
from kvmrec.engine.contract import Outcome, PermanentError, Result
from kvmrec.engine.queue import WorkQueue
from kvmrec.engine.stages import Stages
from kvmrec.hosting import Membership
from kvmrec.reconcilers import recording
from kvmrec.reconcilers.reconciling import Read
from kvmrec.reconcilers.registry import Kinds
from kvmrec.store.base import Store
from kvmrec.store.records import Status, StoredObject

# A reconcile's end: the key, the object and status it read, the status it stored.
_Done = tuple[ObjectKey, StoredObject | None, Status | None, Status | None]


class Dispatch:
    """Runs reconciles of the kinds (set once they are built) for the workers."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        queue: WorkQueue[ObjectKey],
        membership: Membership | None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.queue = queue
        self.membership = membership
        self.kinds: Kinds | None = None
        # Per reconcile: what _after has to look at once its outcome is stored.
        self._done: contextvars.ContextVar[list[_Done] | None] = contextvars.ContextVar(
            "done", default=None
        )

    def _kinds(self) -> Kinds:
        assert self.kinds is not None, "the kinds are set before the workers start"
        return self.kinds

    def reconcile(self, key: ObjectKey) -> Result:
        done: list[_Done] = []
        try:
            return stages.run(self._stages(key, None, done))
        finally:
            for read_and_written in done:
                self._after(*read_and_written)

    def reconcile_many(self, keys: Sequence[ObjectKey]) -> list[Outcome]:
        """Several reconciles, interleaved stage by stage (engine/stages.py); their final
        writes are stored together before anything that depends on them is woken."""
        deferred: recording.Deferred = []
        done: list[_Done] = []
        # Every object and status of the batch in one read (one request to etcd).
        reads = self.store.get_many_with_status(keys) if self._acting() else {}
        outcomes = stages.interleave(
            [functools.partial(self._stages, key, deferred, done, reads.get(key)) for key in keys]
        )
        recording.store_deferred(self.store, deferred, dict(zip(keys, outcomes, strict=True)))
        for read_and_written in done:
            self._after(*read_and_written)
        return outcomes

    def _acting(self) -> bool:
        return self.membership is None or self.membership.acting()

    def _stages(
        self,
        key: ObjectKey,
        deferred: recording.Deferred | None,
        done: list[_Done],
        read: Read | None = None,
    ) -> Stages:
        if not self._acting():
            return Result()  # fenced: the rejoin queues everything again
        reconciler = self._kinds().get(key.kind)
        if reconciler is None:
            raise PermanentError(f"no reconciler for kind {key.kind}")
        token = self._done.set(done)
        try:
            # The reconcile's last status write goes with its history record, in one write,
            # stored before _after wakes what depends on it.
            with (
                logs.about(key),
                recording.one_write(self.store, key, self.clock, deferred=deferred),
            ):
                return (yield from reconciler.stages(key, read))
        finally:
            self._done.reset(token)

    def note(
        self, key: ObjectKey, obj: StoredObject | None, old: Status | None, new: Status | None
    ) -> None:
        """A reconcile ended: _after looks at it once its outcome is stored."""
        after = self._done.get()
        if after is None:
            self._after(key, obj, old, new)
        else:
            after.append((key, obj, old, new))

    def _after(
        self, key: ObjectKey, obj: StoredObject | None, old: Status | None, new: Status | None
    ) -> None:
        """Queue what depends on what just happened to ``key``."""
        dependency = self._kinds().is_dependency(key.kind)
        if obj is None:
            if dependency:
                self._wake_dependents(key)  # an event about a network kvmrec does not manage
            return
        was_ready = old is not None and old.is_true("Ready")
        if dependency and not was_ready and new is not None and new.is_true("Ready"):
            self._wake_dependents(key)
        elif obj.deleting:
            for woken in self._kinds().woken_by_deletion(obj):
                self.queue.add(woken)

    def _wake_dependents(self, key: ObjectKey) -> None:
        statuses = self.store.statuses()
        for holder in self._kinds().dependencies.holders(key):
            ready = statuses.get(holder)
            waiting = ready.condition("Ready") if ready else None
            if waiting is None or waiting.reason == "WaitingForDependency":
                self.queue.add(holder)
