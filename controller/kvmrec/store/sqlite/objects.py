"""Desired objects and their revisions in the state file.

A manifest whose spec digest is new makes a new generation and a revision row; one whose
labels, annotations or source moved, or whose deletion it undoes, is changed without one.
A rescan of a whole directory is one transaction (``apply_many``), its new rows inserted
with ``executemany``. The set of keys is kept in memory: the periodic resync asks for it
often and the service is the only writer of objects in its state file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from kvmrec.api.objects import Manifest, ObjectKey
from kvmrec.store.records import ApplyResult, Revision, StoredObject
from kvmrec.store.sqlite import codec
from kvmrec.store.sqlite.connection import Database

_INSERT_OBJECT = (
    "INSERT INTO objects (kind, name, uid, generation, digest, spec, labels, annotations, "
    "source, deleting, created, updated) VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, 0, ?, ?)"
)
_UPDATE_OBJECT = (
    "UPDATE objects SET generation = ?, digest = ?, spec = ?, labels = ?, annotations = ?, "
    "source = ?, deleting = 0, updated = ? WHERE id = ?"
)
_INSERT_REVISION = (
    'INSERT INTO revisions (kind, name, generation, digest, spec, source, time, "commit") '
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_GET_OBJECT = f"SELECT {codec.OBJECT_COLUMNS} FROM objects WHERE kind = ? AND name = ?"


def _new_uid() -> str:
    import uuid  # here: a read-only command creates nothing (uuid loads platform too)

    return str(uuid.uuid4())


class ObjectRows:
    """The ``Objects`` part of the sqlite store."""

    _db: Database
    _keys: set[ObjectKey] | None
    _seen: dict[ObjectKey, str | None]  # statuses.py

    def apply(self, manifest: Manifest, now: datetime) -> ApplyResult:
        return self.apply_many([manifest], now)[manifest.key]

    def apply_many(
        self,
        manifests: Sequence[Manifest],
        now: datetime,
        commits: str | Mapping[str, str] | None = None,
    ) -> dict[ObjectKey, ApplyResult]:
        stamp = codec.time(now)
        results: dict[ObjectKey, ApplyResult] = {}
        created: list[tuple[Any, ...]] = []
        updated: list[tuple[Any, ...]] = []
        revisions: list[tuple[Any, ...]] = []
        with self._db.writing() as conn:
            existing = {
                (row[1], row[2]): row
                for row in conn.execute(
                    "SELECT id, kind, name, generation, digest, labels, annotations, source, "
                    "deleting FROM objects"
                )
            }
            for manifest in manifests:
                key = manifest.key
                digest = manifest.digest
                commit = commits.get(manifest.source) if isinstance(commits, Mapping) else commits
                labels = codec.dump(dict(manifest.labels))
                annotations = codec.dump(dict(manifest.annotations))
                row = existing.get((key.kind, key.name))
                if row is None:
                    spec = codec.dump(manifest.spec)
                    created.append(
                        (
                            key.kind,
                            key.name,
                            _new_uid(),
                            digest,
                            spec,
                            labels,
                            annotations,
                            manifest.source,
                            stamp,
                            stamp,
                        )
                    )
                    revisions.append(
                        (key.kind, key.name, 1, digest, spec, manifest.source, stamp, commit)
                    )
                    results[key] = ApplyResult(generation=1, changed=True, created=True)
                    continue
                row_id, _, _, generation, old_digest, old_labels, old_annotations = row[:7]
                old_source, deleting = row[7], row[8]
                changed = (
                    old_digest != digest
                    or old_labels != labels
                    or old_annotations != annotations
                    or old_source != manifest.source
                    or deleting
                )
                if not changed:
                    results[key] = ApplyResult(generation, changed=False, created=False)
                    continue
                spec = codec.dump(manifest.spec)
                if old_digest != digest:
                    generation += 1
                    revisions.append(
                        (
                            key.kind,
                            key.name,
                            generation,
                            digest,
                            spec,
                            manifest.source,
                            stamp,
                            commit,
                        )
                    )
                updated.append(
                    (generation, digest, spec, labels, annotations, manifest.source, stamp, row_id)
                )
                results[key] = ApplyResult(generation, changed=True, created=False)
            conn.executemany(_INSERT_OBJECT, created)
            conn.executemany(_UPDATE_OBJECT, updated)
            conn.executemany(_INSERT_REVISION, revisions)
            if self._keys is not None:
                self._keys.update(results)
        return results

    def mark_deleting(self, key: ObjectKey, now: datetime) -> bool:
        with self._db.writing() as conn:
            cursor = conn.execute(
                "UPDATE objects SET deleting = 1, updated = ? "
                "WHERE kind = ? AND name = ? AND deleting = 0",
                (codec.time(now), key.kind, key.name),
            )
        return cursor.rowcount > 0

    def remove(self, key: ObjectKey) -> bool:
        where = (key.kind, key.name)
        with self._db.writing() as conn:
            conn.execute("DELETE FROM objects WHERE kind = ? AND name = ? AND deleting = 1", where)
            if conn.execute("SELECT 1 FROM objects WHERE kind = ? AND name = ?", where).fetchone():
                return False  # applied again meanwhile: it is wanted after all
            conn.execute("DELETE FROM statuses WHERE kind = ? AND name = ?", where)
            if self._keys is not None:
                self._keys.discard(key)
        self._seen.pop(key, None)
        return True

    def get(self, key: ObjectKey) -> StoredObject | None:
        row = self._db.one(_GET_OBJECT, (key.kind, key.name))
        return codec.stored_object(row) if row else None

    def list(self, kind: str | None = None) -> Sequence[StoredObject]:
        sql = f"SELECT {codec.OBJECT_COLUMNS} FROM objects"
        if kind is None:
            rows = self._db.query(sql + " ORDER BY kind, name")
        else:
            rows = self._db.query(sql + " WHERE kind = ? ORDER BY name", (kind,))
        return [codec.stored_object(row) for row in rows]

    def keys(self) -> Sequence[ObjectKey]:
        with self._db.lock:
            if self._keys is None:
                rows = self._db.query("SELECT kind, name FROM objects")
                self._keys = {ObjectKey(kind, name) for kind, name in rows}
            return sorted(self._keys)

    def revisions(self, key: ObjectKey) -> Sequence[Revision]:
        rows = self._db.query(
            'SELECT generation, digest, spec, source, time, "commit" FROM revisions '
            "WHERE kind = ? AND name = ? ORDER BY generation, id",
            (key.kind, key.name),
        )
        return [
            Revision(
                key=key,
                generation=generation,
                digest=digest,
                spec=json.loads(spec),
                source=source,
                time=datetime.fromisoformat(time),
                commit=commit,
            )
            for generation, digest, spec, source, time, commit in rows
        ]
