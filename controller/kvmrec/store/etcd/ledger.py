"""The snapshot ledger in etcd: one key per domain and snapshot name."""

from __future__ import annotations

from collections.abc import Sequence

from kvmrec.store.records import SnapshotRecord

from . import codec
from .client import Client
from .gateway import delete_op, put_op


class LedgerKeys:
    """The ``SnapshotLedger`` part of the etcd store."""

    _etcd: Client

    def record_snapshot(self, snapshot: SnapshotRecord) -> None:
        etcd = self._etcd
        etcd.check_writable()
        where = etcd.layout.snapshot(snapshot.domain, snapshot.name)
        # A replacement whatever was there: the snapshot libvirt has is the truth.
        etcd.write([], [put_op(where, codec.snapshot_value(snapshot))])

    def forget_snapshot(self, domain: str, name: str) -> None:
        etcd = self._etcd
        etcd.check_writable()
        etcd.write([], [delete_op(etcd.layout.snapshot(domain, name))])

    def snapshots(
        self, *, policy: str | None = None, domain: str | None = None
    ) -> Sequence[SnapshotRecord]:
        records = [
            codec.snapshot(kv.value) for kv in self._etcd.scan(self._etcd.layout.snapshots())
        ]
        chosen = [
            r
            for r in records
            if (policy is None or r.policy == policy) and (domain is None or r.domain == domain)
        ]
        return sorted(chosen, key=lambda r: r.time, reverse=True)
