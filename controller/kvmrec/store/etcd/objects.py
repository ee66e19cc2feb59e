"""Desired objects and their revisions in etcd.

An object is one key; a new spec digest is a new generation, written with its revision in
the same transaction, which compares the object's mod revision as read (or that it does not
exist yet). A lost compare re-reads and decides again: applying is idempotent. A rescan of
a directory (``apply_many``) reads every object in one range and writes only what changed,
several objects per transaction (within etcd's limit on operations per transaction), so
a manifest that changed nothing costs no write at all. Unlike sqlite, the objects of one
``apply_many`` are not written all-or-nothing: each transaction holds some of them.

A revision's key is named by its generation and guarded by its object's compare (the
generation comes from the object as read). Revisions outlive ``remove``, as in sqlite; an
object created again under the same name starts at generation 1 and its revisions replace
those of the same generations.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from kvmrec.api.objects import Manifest, ObjectKey
from kvmrec.store.base import StoreError
from kvmrec.store.records import ApplyResult, Revision, StoredObject

from . import codec
from .client import ATTEMPTS, Client, Conflict, backoff
from .gateway import KeyValue, delete_op, put_op, range_op

# etcd refuses a transaction of more than 128 operations (--max-txn-ops) or 1.5 MiB.
_OBJECTS_PER_TXN = 50
_BYTES_PER_TXN = 1 << 20


@dataclass(frozen=True)
class _Change:
    """What one manifest does to its object: the writes, and the compare they need."""

    key: ObjectKey
    result: ApplyResult
    guard: dict[str, Any]
    writes: dict[bytes, bytes]


class ObjectKeys:
    """The ``Objects`` part of the etcd store."""

    _etcd: Client

    def apply(self, manifest: Manifest, now: datetime) -> ApplyResult:
        return self.apply_many([manifest], now)[manifest.key]

    def apply_many(
        self,
        manifests: Sequence[Manifest],
        now: datetime,
        commits: str | Mapping[str, str] | None = None,
    ) -> dict[ObjectKey, ApplyResult]:
        etcd = self._etcd
        etcd.check_writable()
        if not manifests:
            return {}
        with etcd.objects_lock:
            return self._apply_many(manifests, now, commits)

    def _apply_many(
        self,
        manifests: Sequence[Manifest],
        now: datetime,
        commits: str | Mapping[str, str] | None,
    ) -> dict[ObjectKey, ApplyResult]:
        etcd = self._etcd
        current = self._read_objects([m.key for m in manifests])
        results: dict[ObjectKey, ApplyResult] = {}
        pending = list({m.key: m for m in manifests}.values())
        for attempt in range(ATTEMPTS):
            backoff(attempt)
            changes: list[_Change] = []
            for manifest in pending:
                kv = current.get(manifest.key)
                found = (kv.mod_revision, kv.value) if kv else (0, None)
                change = _change(etcd, manifest, found, now, _commit(commits, manifest))
                if change.writes:
                    changes.append(change)
                else:
                    results[manifest.key] = change.result
            lost = self._write_changes(changes, results)
            if not lost:
                return results
            pending = [m for m in pending if m.key in lost]
            current = self._read_objects(lost)
        raise StoreError(f"{etcd.where}: objects changed by other writers {ATTEMPTS} times")

    def _read_objects(self, keys: Sequence[ObjectKey]) -> dict[ObjectKey, KeyValue | None]:
        """The objects of ``keys`` as stored, in one request: each one's key, or for many
        the whole range of objects."""
        etcd = self._etcd
        if len(keys) > _OBJECTS_PER_TXN:
            found = {etcd.layout.object_key(kv.key): kv for kv in etcd.scan(etcd.layout.objects())}
            return {key: found.get(key) for key in keys}
        answers = etcd.read_many([range_op(etcd.layout.object(key)) for key in keys])
        return {key: (r.kvs[0] if r.kvs else None) for key, r in zip(keys, answers, strict=True)}

    def _write_changes(
        self, changes: Sequence[_Change], results: dict[ObjectKey, ApplyResult]
    ) -> list[ObjectKey]:
        """Write ``changes`` in batches; the keys of the batches that lost a compare."""
        lost: list[ObjectKey] = []
        for batch in _batches(changes):
            writes = {k: v for change in batch for k, v in change.writes.items()}
            ops = [put_op(k, v) for k, v in writes.items()]
            try:
                done = self._etcd.write([c.guard for c in batch], ops)
            except Conflict:
                lost.extend(c.key for c in batch)
                continue
            self._etcd.remember(writes, done.revision)
            results.update((c.key, c.result) for c in batch)
        return lost

    def mark_deleting(self, key: ObjectKey, now: datetime) -> bool:
        etcd = self._etcd
        etcd.check_writable()
        where = etcd.layout.object(key)
        with etcd.objects_lock:
            return self._mark_deleting(key, where)

    def _mark_deleting(self, key: ObjectKey, where: bytes) -> bool:
        etcd = self._etcd
        for attempt in range(ATTEMPTS):
            backoff(attempt)
            kv = etcd.read(where)
            if kv is None:
                return False
            obj = codec.stored_object(key, kv.value)
            if obj.deleting:
                return False
            value = codec.object_value(replace(obj, deleting=True))
            try:
                done = etcd.write([etcd.expect(where, kv.mod_revision)], [put_op(where, value)])
            except Conflict:
                continue
            etcd.remember({where: value}, done.revision)
            return True
        raise StoreError(f"{etcd.where}: {key} changed by other writers {ATTEMPTS} times")

    def remove(self, key: ObjectKey) -> bool:
        etcd = self._etcd
        etcd.check_writable()
        with etcd.objects_lock:
            return self._remove(key)

    def _remove(self, key: ObjectKey) -> bool:
        etcd = self._etcd
        if etcd.host is not None and key.kind in etcd.shared_kinds:
            self.forget_status(key)
            return True
        where, statuses = etcd.layout.object(key), etcd.layout.statuses(key)
        for attempt in range(ATTEMPTS):
            backoff(attempt)
            kv = etcd.read(where)
            if kv is not None and not codec.stored_object(key, kv.value).deleting:
                return False  # applied again meanwhile: it is wanted after all
            ops = [
                delete_op(where),
                delete_op(statuses, prefix=True),
                delete_op(etcd.layout.placement(key)),
            ]
            try:
                etcd.write([etcd.expect(where, kv.mod_revision if kv else 0)], ops)
            except Conflict:
                continue
            etcd.forget_prefix(statuses)
            etcd.remember({where: None}, 0)
            return True
        raise StoreError(f"{etcd.where}: {key} changed by other writers {ATTEMPTS} times")

    def forget_status(self, key: ObjectKey) -> None:
        """Drop this store's own status of ``key`` (its host's entry)."""
        etcd = self._etcd
        etcd.check_writable()
        where = etcd.layout.status(key, etcd.host)
        for attempt in range(ATTEMPTS):
            backoff(attempt)
            kv = etcd.read(where)
            if kv is None:
                return
            try:
                etcd.write([etcd.expect(where, kv.mod_revision)], [delete_op(where)])
            except Conflict:
                continue
            etcd.remember({where: None}, 0)
            return
        raise StoreError(f"{etcd.where}: {key} changed by other writers {ATTEMPTS} times")

    def get(self, key: ObjectKey) -> StoredObject | None:
        kv = self._etcd.read(self._etcd.layout.object(key))
        return codec.stored_object(key, kv.value) if kv else None

    def list(self, kind: str | None = None) -> Sequence[StoredObject]:
        layout = self._etcd.layout
        objects = [
            codec.stored_object(layout.object_key(kv.key), kv.value)
            for kv in self._etcd.scan(layout.objects(kind))
        ]
        return sorted(objects, key=lambda o: o.key)

    def keys(self) -> Sequence[ObjectKey]:
        layout = self._etcd.layout
        kvs = self._etcd.scan(layout.objects(), keys_only=True)
        return sorted(layout.object_key(kv.key) for kv in kvs)

    def revisions(self, key: ObjectKey) -> Sequence[Revision]:
        kvs = self._etcd.scan(self._etcd.layout.revisions(key))
        return sorted((codec.revision(key, kv.value) for kv in kvs), key=lambda r: r.generation)


def _commit(commits: str | Mapping[str, str] | None, manifest: Manifest) -> str | None:
    return commits.get(manifest.source) if isinstance(commits, Mapping) else commits


def _change(
    etcd: Client,
    manifest: Manifest,
    found: tuple[int, bytes | None],
    now: datetime,
    commit: str | None,
) -> _Change:
    key, (mod_revision, value) = manifest.key, found
    where = etcd.layout.object(key)
    guard = etcd.expect(where, mod_revision)
    old = codec.stored_object(key, value) if value is not None else None
    if old is None:
        obj = StoredObject(
            key=key,
            uid=str(uuid.uuid4()),
            generation=1,
            digest=manifest.digest,
            spec=manifest.spec,
            source=manifest.source,
            labels=dict(manifest.labels),
            annotations=dict(manifest.annotations),
        )
        revision = Revision(key, 1, manifest.digest, manifest.spec, manifest.source, now, commit)
        writes = {
            where: codec.object_value(obj),
            etcd.layout.revision(key, 1): codec.revision_value(revision),
        }
        return _Change(key, ApplyResult(1, changed=True, created=True), guard, writes)
    new = replace(
        old,
        digest=manifest.digest,
        spec=manifest.spec,
        source=manifest.source,
        labels=dict(manifest.labels),
        annotations=dict(manifest.annotations),
        deleting=False,
    )
    if old.digest != manifest.digest:
        new = replace(new, generation=old.generation + 1)
    elif (
        dict(old.labels) == new.labels
        and dict(old.annotations) == new.annotations
        and old.source == new.source
        and not old.deleting
    ):
        return _Change(key, ApplyResult(old.generation, changed=False, created=False), guard, {})
    writes = {where: codec.object_value(new)}
    if new.generation != old.generation:
        revision = Revision(
            key, new.generation, manifest.digest, manifest.spec, manifest.source, now, commit
        )
        writes[etcd.layout.revision(key, new.generation)] = codec.revision_value(revision)
    return _Change(key, ApplyResult(new.generation, changed=True, created=False), guard, writes)


def _batches(changes: Sequence[_Change]) -> list[list[_Change]]:
    batches: list[list[_Change]] = []
    size = 0
    for change in changes:
        weight = sum(len(k) + len(v) for k, v in change.writes.items())
        if not batches or len(batches[-1]) >= _OBJECTS_PER_TXN or size + weight > _BYTES_PER_TXN:
            batches.append([])
            size = 0
        batches[-1].append(change)
        size += weight
    return batches
