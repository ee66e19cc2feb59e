"""The records a store keeps: objects with their revisions, status, events, source errors.

Plain frozen dataclasses, free of any database library, so the engine, reconcilers and CLI
can pass them around and tests can build them by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from kvmrec.api.objects import ObjectKey


@dataclass(frozen=True)
class StoredObject:
    """The desired state of one object, as last accepted from its manifest."""

    key: ObjectKey
    uid: str
    generation: int
    digest: str
    spec: Mapping[str, Any]
    source: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    deleting: bool = False  # its manifest is gone; the reconciler removes it, then the store


@dataclass(frozen=True)
class ApplyResult:
    """What storing a manifest changed."""

    generation: int
    changed: bool  # spec, labels, annotations, source, or a deletion was undone
    created: bool


@dataclass(frozen=True)
class Revision:
    """One accepted version of an object's spec."""

    key: ObjectKey
    generation: int
    digest: str
    spec: Mapping[str, Any]
    source: str
    time: datetime
    commit: str | None = None  # of the manifest directory, when it is a git work tree


@dataclass(frozen=True)
class ReconcileRecord:
    """One reconcile of an object: when, how long, and how it ended."""

    key: ObjectKey
    time: datetime
    duration: float  # seconds
    result: str  # "ok" | "error" | "permanent"
    message: str | None = None


@dataclass(frozen=True)
class StatusWrite:
    """What one reconcile ends with: its status (None: only its record), that status's
    events (type, reason, message) and the record of the reconcile."""

    key: ObjectKey
    status: Status | None
    events: Sequence[tuple[str, str, str]]
    now: datetime
    reconcile: ReconcileRecord | None = None


@dataclass(frozen=True)
class Condition:
    """A Kubernetes-style condition."""

    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str  # CamelCase
    message: str
    last_transition_time: datetime


@dataclass(frozen=True)
class Drift:
    """One field where the live object differs from the manifest."""

    field: str
    desired: Any
    actual: Any


@dataclass(frozen=True)
class Status:
    """What the last reconcile of an object found and did."""

    observed_generation: int = 0
    conditions: Sequence[Condition] = ()
    drift: Sequence[Drift] = ()
    last_reconcile_time: datetime | None = None
    last_error: str | None = None
    retries: int = 0
    details: Mapping[str, Any] = field(default_factory=dict)  # e.g. the libvirt state

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def is_true(self, type_: str) -> bool:
        cond = self.condition(type_)
        return cond is not None and cond.status == "True"

    def with_condition(
        self, type_: str, status: str, reason: str, message: str, now: datetime
    ) -> Status:
        """A copy with one condition set; its transition time moves only when status does."""
        return replace(
            self, conditions=self.conditions_with([(type_, status, reason, message)], now)
        )

    def conditions_with(
        self, updates: Iterable[tuple[str, str, str, str]], now: datetime
    ) -> tuple[Condition, ...]:
        """The conditions with each of ``updates`` (type, status, reason, message) set in
        turn, as ``with_condition`` of each would leave them: one sort, no copies between."""
        by_type = {c.type: c for c in self.conditions}
        for type_, status, reason, message in updates:
            old = by_type.pop(type_, None)  # set again after the others, as a new one
            since = old.last_transition_time if old and old.status == status else now
            by_type[type_] = Condition(type_, status, reason, message, since)
        return tuple(sorted(by_type.values(), key=lambda c: _CONDITION_ORDER.get(c.type, 99)))


_CONDITION_ORDER = {"Ready": 0, "Synced": 1, "RestartRequired": 2, "Degraded": 3}


@dataclass(frozen=True)
class Event:
    """Something that happened to an object, kept for ``kvmrec events``."""

    time: datetime
    key: ObjectKey | None
    type: str  # "Normal" | "Warning"
    reason: str
    message: str
    seq: int = 0  # its place in the order the store recorded events (0: not from a store)


@dataclass(frozen=True)
class SourceError:
    """A manifest file that could not be applied, and why."""

    source: str
    message: str
    time: datetime


@dataclass(frozen=True)
class SnapshotRecord:
    """A snapshot kvmrec took, and for which policy (None: a Snapshot object or the CLI)."""

    domain: str
    name: str
    policy: str | None
    time: datetime
    quiesced: bool
    memory: bool


def deletion_digest(keys: Iterable[ObjectKey]) -> str:
    """One digest for a set of objects to delete, whatever their order."""
    import hashlib  # here: the read-only commands load this module but never digest

    text = "\n".join(sorted(str(key) for key in set(keys)))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class DeletionApproval:
    """An operator's yes to one mass deletion the guard held back (``kvmrec prune``): these
    exact objects, once, until ``expires``."""

    keys: tuple[ObjectKey, ...]
    expires: datetime

    @property
    def digest(self) -> str:
        return deletion_digest(self.keys)

    def covers(self, keys: Iterable[ObjectKey], now: datetime) -> bool:
        """Whether deleting exactly ``keys`` at ``now`` is what was approved."""
        return now < self.expires and deletion_digest(keys) == self.digest
