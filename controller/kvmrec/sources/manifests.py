"""From directory snapshots to desired state in the store.

Each snapshot of the manifest directory is parsed file by file (a parse is cached by the
file's digest, so an unchanged file costs nothing) and applied to the store:

- a file that parses is applied whole: its objects are stored (a changed spec is a new
  generation), and objects it no longer holds are marked for deletion;
- a file that does not parse, cannot be read, or defines an object another file already
  defines keeps its last good state: the objects the store has from it stay as they are,
  and the problem is recorded as a source error (``kvmrec status`` shows it on each of
  those objects as ``Synced=False InvalidManifest``, exit 2). The file going into error (or
  into another error) is a ``ManifestInvalid`` event on each of its objects, and its
  recovery a ``ManifestValid`` event; a file that has no objects gets them as events of
  no object;
- an object stored by ``kvmrec apply`` (its source an absolute path, not a file of the
  directory) is not the directory's: no pass deletes it, and the guard does not count it;
  a file of the directory that defines it takes it over;
- an incomplete snapshot (directory missing or unmounted) deletes nothing, and the errors
  known of the files it could not see stay as they were;
- a pass that would delete most managed objects at once (more than ``guard_fraction`` of
  them, and at least ``guard_min``) is refused and reported: an emptied or half-synced
  directory is far more often an accident than an intent. Deleting in smaller steps,
  ``--allow-mass-delete``, or an operator's approval of that exact set of deletions
  (``kvmrec prune``: once, before it expires) gets past it.

The result names every key whose desired state changed, for the work queue.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from kvmrec.api import manifests
from kvmrec.api.errors import ManifestError
from kvmrec.api.kinds import Manifest, ObjectKey
from kvmrec.engine.clock import Clock
from kvmrec.sources.scanning import Snapshot
from kvmrec.store.base import Store
from kvmrec.store.records import StoredObject

log = logging.getLogger(__name__)

GUARD_SOURCE = "(directory)"
INVALID = "ManifestInvalid"
VALID = "ManifestValid"


@dataclass(frozen=True)
class SyncResult:
    changed: list[ObjectKey] = field(default_factory=list)  # created or updated
    deleting: list[ObjectKey] = field(default_factory=list)
    errors: Mapping[str, str] = field(default_factory=dict)  # source -> message
    refused: int = 0  # deletions held back by the guard


@dataclass(frozen=True)
class Desired:
    """What a snapshot asks for."""

    manifests: Mapping[ObjectKey, Manifest] = field(default_factory=dict)
    held: list[ObjectKey] = field(default_factory=list)  # files in error: last good state
    doomed: list[ObjectKey] = field(default_factory=list)  # to delete (after the guard)
    errors: Mapping[str, str] = field(default_factory=dict)
    refused: int = 0
    held_back: list[ObjectKey] = field(default_factory=list)  # what the guard refused
    approved: str | None = None  # the digest of the approval that let ``doomed`` through


class ManifestSync:
    """Applies snapshots of the manifest directory to the store."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        guard_fraction: float = 0.5,
        guard_min: int = 2,
        allow_mass_delete: bool = False,
    ) -> None:
        self._store = store
        self._clock = clock
        self._guard_fraction = guard_fraction
        self._guard_min = guard_min
        self._allow_mass_delete = allow_mass_delete
        self._parsed: dict[str, tuple[str, list[Manifest] | ManifestError]] = {}
        self._started = False  # a file found broken at start is told in the log once

    def _parse(self, path: str, digest: str, data: bytes) -> list[Manifest] | ManifestError:
        cached = self._parsed.get(path)
        if cached is not None and cached[0] == digest:
            return cached[1]
        result: list[Manifest] | ManifestError
        try:
            result = manifests.parse_file(path, data)
        except ManifestError as exc:
            result = exc
        self._parsed[path] = (digest, result)
        return result

    def apply(
        self, snapshot: Snapshot, commit: str | Mapping[str, str] | None = None
    ) -> SyncResult:
        """Store what ``snapshot`` asks for (new revisions record ``commit``, one for all or
        one by source file); returns the keys to queue."""
        now = self._clock.wall()
        stored = self._store.list()
        desired = self.compute(snapshot, stored)
        before = {e.source: e.message for e in self._store.source_errors()}
        if not snapshot.complete:
            # Nothing is known of the files now: what was wrong with them still is.
            kept = {s: m for s, m in before.items() if s != GUARD_SOURCE}
            errors = {**kept, **desired.errors}
            self._store.set_source_errors(errors, now)
            return SyncResult(errors=errors)
        applied = self._store.apply_many(list(desired.manifests.values()), now, commit)
        changed = [key for key, result in applied.items() if result.changed]
        removed = "manifest removed"
        if desired.approved is not None:
            self._store.consume_deletion_approval(desired.approved)
            removed += " (a mass deletion approved with kvmrec prune)"
            log.warning("deleting %d managed objects at once, as approved", len(desired.doomed))
        deleting = [k for k in desired.doomed if self._store.mark_deleting(k, now)]
        for key in deleting:
            self._store.add_event(key, "Normal", "ManifestRemoved", removed, now)
        self._store.set_source_errors(desired.errors, now)
        self._record_transitions(before, desired, snapshot, stored, now)
        return SyncResult(
            changed=changed, deleting=deleting, errors=desired.errors, refused=desired.refused
        )

    def _record_transitions(
        self,
        before: Mapping[str, str],
        desired: Desired,
        snapshot: Snapshot,
        stored: Iterable[StoredObject],
        now: datetime,
    ) -> None:
        """An event for every file that went into error, changed error, or was fixed."""
        held: dict[str, list[ObjectKey]] = {}
        for obj in stored:
            if not obj.deleting:
                held.setdefault(obj.source, []).append(obj.key)
        holds: dict[str, list[ObjectKey]] = {}
        for manifest in desired.manifests.values():
            holds.setdefault(manifest.source, []).append(manifest.key)
        for source, message in sorted(desired.errors.items()):
            if source == GUARD_SOURCE:
                continue
            if before.get(source) != message:
                keeping = "; keeping the last good spec" if source in held else ""
                text = f"{source}: {message}{keeping}"
                self._events(held.get(source, []), "Warning", INVALID, text, now)
            elif not self._started:
                # Its event is from an earlier run; this process's log says it too.
                log.warning("%s: still invalid: %s", source, message)
        for source in sorted(before):
            fixed = source not in desired.errors and source in snapshot.files
            if source != GUARD_SOURCE and fixed:
                text = f"{source} is valid again"
                self._events(holds.get(source, []), "Normal", VALID, text, now)
        self._started = True

    def _events(
        self, keys: list[ObjectKey], type_: str, reason: str, message: str, now: datetime
    ) -> None:
        targets: list[ObjectKey | None] = [*sorted(keys)] or [None]
        for key in targets:
            self._store.add_event(key, type_, reason, message, now)

    def compute(self, snapshot: Snapshot, stored_objects: Iterable[StoredObject]) -> Desired:
        """What ``snapshot`` asks for, given what is stored; changes nothing (``kvmrec plan``
        uses it as it is)."""
        errors: dict[str, str] = {}
        if not snapshot.complete:
            errors[GUARD_SOURCE] = (
                f"cannot read the manifest directory ({snapshot.error}); "
                "keeping the last good state of every object"
            )
            return Desired(errors=errors)

        for gone in set(self._parsed) - set(snapshot.files):
            del self._parsed[gone]

        stored = {obj.key: obj for obj in stored_objects}
        held_sources: set[str] = set()
        accepted: dict[str, list[Manifest]] = {}
        for path in sorted(snapshot.files):
            if path in snapshot.errors:
                errors[path] = snapshot.errors[path]
                held_sources.add(path)
                continue
            content = snapshot.files[path]
            parsed = self._parse(path, content.digest, content.data)
            if isinstance(parsed, ManifestError):
                errors[path] = "; ".join(p.message() for p in parsed.problems)
                held_sources.add(path)
            else:
                accepted[path] = parsed

        # An object defined by two files belongs to the one that already had it (else to
        # the first by name); the other file is in error and keeps its last good state.
        owners: dict[ObjectKey, str] = {}
        for path, parsed in accepted.items():
            for manifest in parsed:
                current = owners.get(manifest.key)
                previous = stored[manifest.key].source if manifest.key in stored else None
                if current is None or (path == previous and current != previous):
                    owners[manifest.key] = path
        desired: dict[ObjectKey, Manifest] = {}
        for path, parsed in accepted.items():
            lost = next((m for m in parsed if owners[m.key] != path), None)
            if lost is not None:
                errors[path] = (
                    f"document {lost.document}: {lost.key} is already defined in {owners[lost.key]}"
                )
                held_sources.add(path)
                continue
            for manifest in parsed:
                desired[manifest.key] = manifest

        # Objects whose file is in error keep their last good state (unless another file now
        # defines them, which wins).
        held = {k for k, obj in stored.items() if obj.source in held_sources and k not in desired}
        # What `kvmrec apply` stored (its source an absolute path, not a file of this
        # directory) is not the directory's to delete, nor counted by the guard.
        live = [k for k, obj in stored.items() if not obj.deleting and of_directory(obj)]
        doomed = sorted(k for k in live if k not in desired and k not in held)

        refused, held_back, approved = 0, [], None
        if (
            not self._allow_mass_delete
            and len(doomed) >= self._guard_min
            and len(doomed) > self._guard_fraction * len(live)
        ):
            approval = self._store.deletion_approval()
            if approval is not None and approval.covers(doomed, self._clock.wall()):
                approved = approval.digest
            else:
                refused, held_back = len(doomed), doomed
                errors[GUARD_SOURCE] = (
                    f"refusing to delete {len(doomed)} of {len(live)} managed objects at once "
                    f"({', '.join(str(k) for k in doomed[:5])}"
                    f"{', ...' if len(doomed) > 5 else ''}); if this is intended, remove "
                    "fewer manifests at a time, approve these deletions once with "
                    "`kvmrec prune`, or run with --allow-mass-delete"
                )
                log.warning("%s", errors[GUARD_SOURCE])
                doomed = []
        return Desired(
            manifests=desired,
            held=sorted(held),
            doomed=doomed,
            errors=errors,
            refused=refused,
            held_back=held_back,
            approved=approved,
        )


def of_directory(obj: StoredObject) -> bool:
    """Whether ``obj`` came from a file of the manifest directory (sources are relative to
    it) rather than from ``kvmrec apply`` (an absolute path)."""
    return not obj.source.startswith("/")
