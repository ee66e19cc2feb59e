"""The interface of a store, split by concern: what the service, reconcilers and CLI may ask.

    Objects        desired state as accepted from manifests, with generations and revisions
    Statuses       what the last reconcile found, and the events that tell how it got there
    History        one record per reconcile, and the pruning of old history
    SnapshotLedger the snapshots kvmrec took (a policy prunes only its own)
    SourceErrors   the manifest files that could not be applied
    Approvals      the one pending approval of a mass deletion (``kvmrec prune``)
    Changes        a cheap counter a watching command polls

``Store`` is all of them; a caller that needs less depends on the narrower Protocol.
Implementations must be safe to call from several worker threads at once, and every
method that writes is atomic: it is on disk (or in etcd) when it returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

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
    StatusWrite,
    StoredObject,
)

if TYPE_CHECKING:
    from kvmrec.store.convergence import Convergence


class StoreError(Exception):
    """The store cannot be read or written (missing, locked, read-only, full)."""


class StatusConflict(StoreError):
    """A status write refused: another client wrote that status after this one last read
    it. The reconcile is retried from a fresh read."""


class Objects(Protocol):
    def apply(self, manifest: Manifest, now: datetime) -> ApplyResult:
        """Store a manifest's desired state; a new spec digest is a new generation and revision."""

    def apply_many(
        self,
        manifests: Sequence[Manifest],
        now: datetime,
        commits: str | Mapping[str, str] | None = None,
    ) -> Mapping[ObjectKey, ApplyResult]:
        """``apply`` for many manifests at once, in one transaction; new revisions record
        ``commits`` (of the manifest directory's git work tree, if it is one): one for all,
        or one by source file, a file without one having none."""

    def mark_deleting(self, key: ObjectKey, now: datetime) -> bool:
        """Record that an object's manifest is gone; False if it was unknown or already so."""

    def remove(self, key: ObjectKey) -> bool:
        """Forget an object marked for deletion and its status (after its live counterpart
        was deleted or orphaned); its events and history stay. False, and nothing
        forgotten, when the object is no longer marked: its manifest came back while it was
        being deleted (an object already gone is no error)."""

    def get(self, key: ObjectKey) -> StoredObject | None: ...

    def list(self, kind: str | None = None) -> Sequence[StoredObject]:
        """Sorted by kind, then name."""

    def keys(self) -> Sequence[ObjectKey]:
        """Every object's key, sorted, cheaply (no specs decoded)."""

    def revisions(self, key: ObjectKey) -> Sequence[Revision]:
        """Oldest first."""


class Statuses(Protocol):
    """Statuses and events. A status write fails (``StatusConflict``) where another client
    wrote that status after this one last read it: a writer never overwrites what it has
    not seen. The write's events and history record are stored all the same: they tell
    what was done, which the retry will not do again."""

    def get_status(self, key: ObjectKey) -> Status | None: ...

    def get_with_status(self, key: ObjectKey) -> tuple[StoredObject | None, Status | None]:
        """An object and its status in one read (what a reconcile starts from)."""

    def get_many_with_status(
        self, keys: Sequence[ObjectKey]
    ) -> Mapping[ObjectKey, tuple[StoredObject | None, Status | None]]:
        """``get_with_status`` of each key, read together (what a batch of reconciles
        starts from): on etcd one request, where a key alone costs a round trip."""

    def statuses(self) -> Mapping[ObjectKey, Status]:
        """Each object's status: on a store of one host, that host's; otherwise the newest
        any host reported (``get_status`` and ``get_with_status`` read the same)."""

    def host_statuses(
        self, key: ObjectKey | None = None
    ) -> Sequence[tuple[ObjectKey, str | None, Status]]:
        """Every host's status of each object (of ``key`` only, when given), sorted by
        object then host; the host is None where the store keeps one status per object."""

    def convergence(self) -> Mapping[ObjectKey, Convergence]:
        """Every stored object's generation beside what its status (as ``statuses`` has
        it) says of it: what ``run --once`` asks after every change, read without
        decoding every spec and status whole."""

    def record(
        self,
        key: ObjectKey,
        status: Status,
        events: Sequence[tuple[str, str, str]],
        now: datetime,
        *,
        reconcile: ReconcileRecord | None = None,
    ) -> None:
        """Store a status, its events (type, reason, message) and, when given, the record of
        the reconcile that produced them: together, atomically (one transaction). The status
        does not need its object (a reconcile may race a remove)."""

    def record_many(self, writes: Sequence[StatusWrite]) -> Sequence[StoreError | None]:
        """Store each write as ``record`` does (a write without a status: its record
        alone); what went wrong with each, in order. A store that can puts them all in one
        transaction, and each alone only when that fails."""

    def add_event(
        self, key: ObjectKey | None, type_: str, reason: str, message: str, now: datetime
    ) -> None: ...

    def events(
        self, key: ObjectKey | None = None, limit: int = 100, *, after: int | None = None
    ) -> Sequence[Event]:
        """Oldest first: the last ``limit``, or with ``after`` the first ``limit`` whose
        ``seq`` is greater (to follow the events as they are recorded)."""


class History(Protocol):
    def record_reconcile(self, record: ReconcileRecord) -> None: ...

    def reconciles(self, key: ObjectKey, limit: int = 50) -> Sequence[ReconcileRecord]:
        """Oldest first, the last ``limit``."""

    def prune_history(self, before: datetime) -> int:
        """Forget events, reconciles and revisions older than ``before`` (the newest revision
        of each object always stays); returns how many went."""


class SnapshotLedger(Protocol):
    def record_snapshot(self, snapshot: SnapshotRecord) -> None:
        """Add a snapshot, or replace the one of the same domain and name."""

    def forget_snapshot(self, domain: str, name: str) -> None: ...

    def snapshots(
        self, *, policy: str | None = None, domain: str | None = None
    ) -> Sequence[SnapshotRecord]:
        """Newest first."""


class SourceErrors(Protocol):
    def set_source_errors(self, errors: Mapping[str, str], now: datetime) -> None:
        """Replace the list of manifest files in error (an empty mapping clears it); an
        unchanged error keeps the time it was first seen."""

    def source_errors(self) -> Sequence[SourceError]:
        """Sorted by source."""


class Approvals(Protocol):
    def approve_deletions(self, approval: DeletionApproval) -> None:
        """Record the one pending mass-deletion approval (replacing any other)."""

    def deletion_approval(self) -> DeletionApproval | None: ...

    def consume_deletion_approval(self, digest: str) -> bool:
        """Drop the approval if it is the one of ``digest``; whether it was."""


class Changes(Protocol):
    def change_counter(self) -> int:
        """A number that moves whenever another process (or connection) commits a write.
        Cheap: a watching command polls it to know when to read again."""


class Closing(Protocol):
    def close(self) -> None: ...


class Store(
    Objects,
    Statuses,
    History,
    SnapshotLedger,
    SourceErrors,
    Approvals,
    Changes,
    Closing,
    Protocol,
):
    """Everything a store keeps."""
