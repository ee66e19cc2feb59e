"""The interface of a store: what the service, reconcilers and CLI may ask of one.

Implementations must be safe to call from several worker threads at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from kvmrec.api.objects import Manifest, ObjectKey
from kvmrec.store.records import (
    ApplyResult,
    DeletionApproval,
    Event,
    ReconcileRecord,
    Revision,
    SnapshotRecord,
    SourceError,
    Status,
    StoredObject,
)


class StoreError(Exception):
    """The store cannot be read or written (missing, locked, read-only, full)."""


class Store(Protocol):
    def apply(self, manifest: Manifest, now: datetime) -> ApplyResult:
        """Store a manifest's desired state; a new spec digest is a new generation and revision."""

    def mark_deleting(self, key: ObjectKey, now: datetime) -> bool:
        """Record that an object's manifest is gone; False if it was unknown or already so."""

    def apply_many(
        self,
        manifests: Sequence[Manifest],
        now: datetime,
        commits: str | Mapping[str, str] | None = None,
    ) -> Mapping[ObjectKey, ApplyResult]:
        """``apply`` for many manifests at once, in one transaction; new revisions record
        ``commits`` (of the manifest directory's git work tree, if it is one): one for all,
        or one by source file, a file without one having none."""

    def remove(self, key: ObjectKey) -> None:
        """Forget an object (after its live counterpart was deleted or orphaned)."""

    def get(self, key: ObjectKey) -> StoredObject | None: ...

    def list(self, kind: str | None = None) -> Sequence[StoredObject]: ...

    def keys(self) -> Sequence[ObjectKey]:
        """Every object's key, cheaply (no specs decoded)."""

    def revisions(self, key: ObjectKey) -> Sequence[Revision]: ...

    def get_status(self, key: ObjectKey) -> Status | None: ...

    def statuses(self) -> Mapping[ObjectKey, Status]: ...

    def put_status(self, key: ObjectKey, status: Status) -> None: ...

    def record(
        self,
        key: ObjectKey,
        status: Status,
        events: Sequence[tuple[str, str, str]],
        now: datetime,
    ) -> None:
        """Store a status and its events (type, reason, message) together, atomically."""

    def add_event(
        self, key: ObjectKey | None, type_: str, reason: str, message: str, now: datetime
    ) -> None: ...

    def events(
        self, key: ObjectKey | None = None, limit: int = 100, *, after: int | None = None
    ) -> Sequence[Event]:
        """Oldest first: the last ``limit``, or with ``after`` the first ``limit`` whose
        ``seq`` is greater (to follow the events as they are recorded)."""

    def set_source_errors(self, errors: Mapping[str, str], now: datetime) -> None:
        """Replace the list of manifest files in error (an empty mapping clears it)."""

    def source_errors(self) -> Sequence[SourceError]: ...

    def record_reconcile(self, record: ReconcileRecord) -> None: ...

    def reconciles(self, key: ObjectKey, limit: int = 50) -> Sequence[ReconcileRecord]:
        """Oldest first, the last ``limit``."""

    def prune_history(self, before: datetime) -> int: ...

    def record_snapshot(self, snapshot: SnapshotRecord) -> None: ...

    def forget_snapshot(self, domain: str, name: str) -> None: ...

    def snapshots(
        self, *, policy: str | None = None, domain: str | None = None
    ) -> Sequence[SnapshotRecord]:
        """Newest first."""

    def approve_deletions(self, approval: DeletionApproval) -> None:
        """Record the one pending mass-deletion approval (replacing any other)."""
        ...

    def deletion_approval(self) -> DeletionApproval | None: ...

    def consume_deletion_approval(self, digest: str) -> bool:
        """Drop the approval if it is the one of ``digest``; whether it was."""
        ...

    def close(self) -> None: ...
