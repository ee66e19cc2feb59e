"""What the manifest sync keeps besides objects, one key each: the files in error
(``P/source-errors``) and the one pending approval of a mass deletion (``P/approval``).

Both are read, then written with a compare of what was read; the same errors again write
nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime

from kvmrec.api.objects import ObjectKey
from kvmrec.store import codec
from kvmrec.store.records import DeletionApproval, SourceError

from .client import Client
from .gateway import delete_op, put_op


class SourceKeys:
    """The ``SourceErrors`` and ``Approvals`` parts of the etcd store."""

    _etcd: Client

    def _source_errors(self) -> tuple[int, dict[str, tuple[str, str]]]:
        kv = self._etcd.read(self._etcd.layout.source_errors())
        if kv is None:
            return 0, {}
        body = json.loads(kv.value)
        return kv.mod_revision, {s: (e["message"], e["time"]) for s, e in body.items()}

    def set_source_errors(self, errors: Mapping[str, str], now: datetime) -> None:
        etcd = self._etcd
        etcd.check_writable()
        where = etcd.layout.source_errors()
        mod_revision, old = self._source_errors()
        if {s: m for s, (m, _) in old.items()} == dict(errors):
            return
        body = {}
        for source, message in sorted(errors.items()):
            before = old.get(source)
            since = before[1] if before and before[0] == message else codec.time(now)
            body[source] = {"message": message, "time": since}
        op = put_op(where, codec.dump(body).encode()) if body else delete_op(where)
        etcd.write([etcd.expect(where, mod_revision)], [op])

    def source_errors(self) -> Sequence[SourceError]:
        _, errors = self._source_errors()
        return [
            SourceError(s, m, datetime.fromisoformat(t)) for s, (m, t) in sorted(errors.items())
        ]

    def approve_deletions(self, approval: DeletionApproval) -> None:
        etcd = self._etcd
        etcd.check_writable()
        value = codec.dump(
            {"keys": [str(k) for k in approval.keys], "expires": codec.time(approval.expires)}
        )
        etcd.write([], [put_op(etcd.layout.approval(), value.encode())])

    def deletion_approval(self) -> DeletionApproval | None:
        kv = self._etcd.read(self._etcd.layout.approval())
        return _approval(kv.value) if kv else None

    def consume_deletion_approval(self, digest: str) -> bool:
        etcd = self._etcd
        etcd.check_writable()
        where = etcd.layout.approval()
        kv = etcd.read(where)
        if kv is None or _approval(kv.value).digest != digest:
            return False
        etcd.write([etcd.expect(where, kv.mod_revision)], [delete_op(where)])
        return True


def _approval(value: bytes) -> DeletionApproval:
    body = json.loads(value)
    keys = tuple(ObjectKey(*k.split("/", 1)) for k in body["keys"])
    return DeletionApproval(keys, datetime.fromisoformat(body["expires"]))
