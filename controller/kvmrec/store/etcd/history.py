"""History in etcd: one key per reconcile, and the pruning of what is too old.

Reconcile records are ordered by their keys' create revision. Pruning deletes in
transactions of at most ``_DELETES_PER_TXN`` keys (etcd's limit on operations is 128);
deleting what is old is idempotent, so it needs no compare but the fence's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from kvmrec.api.objects import ObjectKey
from kvmrec.store.records import ReconcileRecord

from . import codec
from .client import Client
from .gateway import KeyValue, delete_op, put_op

_DELETES_PER_TXN = 100


class HistoryKeys:
    """The ``History`` part of the etcd store."""

    _etcd: Client

    def record_reconcile(self, record: ReconcileRecord) -> None:
        etcd = self._etcd
        etcd.check_writable()
        key = etcd.layout.new_history(record.key)
        etcd.write([], [put_op(key, codec.reconcile_value(record))])

    def reconciles(self, key: ObjectKey, limit: int = 50) -> Sequence[ReconcileRecord]:
        found = self._etcd.range(
            self._etcd.layout.history(key),
            prefix=True,
            limit=limit,
            sort_target="CREATE",
            sort_order="DESCEND",
        )
        kvs = sorted(found.kvs, key=lambda kv: kv.create_revision)
        return [codec.reconcile(key, kv.value) for kv in kvs]

    def prune_history(self, before: datetime) -> int:
        etcd = self._etcd
        etcd.check_writable()
        layout = etcd.layout
        old: list[bytes] = [
            kv.key for kv in etcd.scan(layout.events()) if codec.event_time(kv.value) < before
        ]
        old += [
            kv.key
            for kv in etcd.scan(layout.history())
            if codec.reconcile(ObjectKey("", ""), kv.value).time < before
        ]
        newest: dict[bytes, KeyValue] = {}
        revisions: list[tuple[bytes, KeyValue]] = []
        for kv in etcd.scan(layout.revisions()):
            owner = kv.key.rsplit(b"/", 1)[0]  # keys sort by generation: the last is newest
            revisions.append((owner, kv))
            newest[owner] = kv
        old += [
            kv.key
            for owner, kv in revisions
            if newest[owner] is not kv and codec.revision(ObjectKey("", ""), kv.value).time < before
        ]
        for start in range(0, len(old), _DELETES_PER_TXN):
            etcd.write([], [delete_op(key) for key in old[start : start + _DELETES_PER_TXN]])
        return len(old)
