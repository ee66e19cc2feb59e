"""What a kind supplies to the generic reconcile (reconcilers/reconciling.py).

A kind parses its spec, observes its live object, decides the steps (a ``Plan``), acts one
step at a time and reports what it found; it says whether the live object carries
kvmrec's stamp, how its deletion goes, and how it is wired (which kinds wait for it, which
backend events name it, whether a resync may skip it). A ``Turn`` is one reconcile or plan
of one object, handed to each of these in turn.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

from kvmrec.api.kinds import DeletionPolicy, ObjectKey
from kvmrec.backends.errors import BackendError
from kvmrec.reconcilers.dependencies import Dependencies
from kvmrec.reconcilers.plans import Plan, Step
from kvmrec.store.records import Drift, Status, StoredObject

S = TypeVar("S")  # the parsed spec
L = TypeVar("L")  # what observe found

Event = tuple[str, str, str]  # type, reason, message


class StepFailed(Exception):
    """A step that cannot be done now for a reason the operator must see; the object's
    ``Ready`` says so (``reason``) and it is tried again after ``retry`` seconds."""

    def __init__(self, reason: str, message: str, retry: float) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry = retry


@dataclass
class Turn(Generic[S, L]):
    """One reconcile (or plan) of one object: what it read, and what it has done so far."""

    obj: StoredObject
    spec: S
    live: L | None
    status: Status  # as stored before this turn (empty for a new object)
    now: datetime
    events: list[Event] = field(default_factory=list)
    plan: Plan = field(default_factory=Plan)  # what decide said, once it has
    # What acting learnt that the report needs (a kind's own, e.g. a step that failed).
    notes: dict[str, Any] = field(default_factory=dict)
    written: list[Status] = field(default_factory=list)  # the statuses this turn stored

    @property
    def name(self) -> str:
        return self.obj.key.name


@dataclass(frozen=True)
class Report:
    """What a kind found after acting: the generic layer turns it into status."""

    ready: bool
    reason: str
    message: str = ""
    drift: tuple[Drift, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    requeue_after: float | None = None
    conditions: tuple[tuple[str, str, str, str], ...] = ()  # type, status, reason, message
    error: str | None = None  # what still went wrong, for ``lastError``


class Kind(Generic[S, L]):
    """What a kind supplies to the generic reconcile. The defaults fit a kind whose live
    object carries kvmrec's stamp (Domain, Network, OvsBridge)."""

    kind: ClassVar[str]
    noun: ClassVar[str] = ""  # "network": how messages name the live object
    removal: ClassVar[str] = "delete"  # what deletionPolicy Delete does to it
    unavailable: ClassVar[str] = "LibvirtUnavailable"  # Ready's reason when its daemon is away
    errors: ClassVar[tuple[type[Exception], ...]] = (BackendError,)
    reasons: ClassVar[Mapping[str, str]] = {}  # step action -> event reason
    # Reasons of a wait that is recorded in status (Ready and Synced False) and requeued
    # instead of acting; and of one that is only requeued (nothing changed, nothing to say).
    waits: ClassVar[frozenset[str]] = frozenset({"WaitingForDependency"})
    quiet_waits: ClassVar[frozenset[str]] = frozenset()

    # -- wiring (reconcilers/registry.py) ------------------------------------------------
    # A Domain can wait for objects of this kind: its turning Ready wakes those waiting,
    # and an event about one kvmrec does not manage wakes the domains that name it.
    dependency: ClassVar[bool] = False
    # Which backend's events name objects of this kind ("domain", "network", "bridge"),
    # and whether an event about an object without a manifest is still queued.
    events: ClassVar[str | None] = None
    events_of_unmanaged: ClassVar[bool] = False
    # The backend whose reconnect makes every object of this kind worth a look.
    relisted_by: ClassVar[str] = "libvirt"

    def woken_by_deletion(self, obj: StoredObject) -> list[ObjectKey]:
        """Keys to queue once ``obj`` is deleted (a deletion that waited for it)."""
        return []

    def stale(self, keys: list[ObjectKey]) -> list[ObjectKey]:
        """Of ``keys``, those a periodic resync must reconcile; a kind with a cheap
        fingerprint of its live objects leaves out those that did not move."""
        return keys

    def parse(self, obj: StoredObject) -> S:
        raise NotImplementedError

    def observe(self, obj: StoredObject, spec: S) -> L | None:
        raise NotImplementedError

    def now(self, wall: datetime) -> datetime:
        """The time of a turn (a schedule reads the host's wall clock)."""
        return wall

    def prepare(self, turn: Turn[S, L]) -> None:
        """Before deciding: bring what the kind remembers in ``turn.status`` up to date
        with what it observed (in memory; a reconcile stores it, a plan drops it)."""

    def decide(self, turn: Turn[S, L]) -> Plan:
        """The steps that bring the live object to the spec; ownership is checked."""
        raise NotImplementedError

    def act(self, turn: Turn[S, L], step: Step) -> str | Event:
        """Carry out one step; returns the event's message ("" for none), or the whole
        event when it is not the step's ``Normal`` one."""
        raise NotImplementedError

    def report(self, turn: Turn[S, L]) -> Report:
        """What the live object (observed again after acting) is, against the spec."""
        raise NotImplementedError

    def done(self, turn: Turn[S, L]) -> None:
        """The turn's status is written."""

    # -- ownership -----------------------------------------------------------------------

    def stamped(self, turn: Turn[S, L]) -> bool:
        """The live object carries the stamp of this manifest."""
        return True

    def adopted(self, turn: Turn[S, L]) -> bool:
        """Its stamp says kvmrec adopted it rather than created it."""
        return False

    def owned(self) -> bool:
        """Whether the kind's live objects carry kvmrec's stamp at all."""
        return True

    # -- deletion ------------------------------------------------------------------------

    def holders(self, key: ObjectKey) -> list[ObjectKey]:
        """Managed objects that still use this one; its deletion waits for them."""
        return []

    def deletion(self, turn: Turn[S, L]) -> Plan | None:
        """A kind's own deletion plan; None: by ``deletionPolicy`` and the stamp."""
        return None

    def delete_detail(self, turn: Turn[S, L], detail: str) -> str:
        """What the plan says deletion does, from what deletionPolicy Delete does."""
        return detail

    def forget(self, turn: Turn[S, L]) -> None:
        """Forget what kvmrec recorded of the object, once it is deleted."""

    def deletion_policy(self, spec: S) -> DeletionPolicy:
        return DeletionPolicy.DELETE

    def held(self, turn: Turn[S, L], plan: Plan) -> tuple[Status, float] | None:
        """A deletion step that must wait (a guest still powering off): the status to
        record and when to look again; None: go on."""
        return None


class StampedKind(Kind[S, L]):
    """A kind whose deletion acts on the live object (orphan, delete) and whose deletion
    waits for the managed objects that use it."""

    def __init__(self, dependencies: Dependencies | None) -> None:
        self._deps = dependencies

    def holders(self, key: ObjectKey) -> list[ObjectKey]:
        return self._deps.holders(key) if self._deps is not None else []
