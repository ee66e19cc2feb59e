"""Migration requests in etcd: ``P/migrations/KIND/NAME`` holds one Domain's request.

    {source, to, requested, state, reason, copy_storage, mode, progress, cancel}

A request is written in one transaction that compares the Domain's placement (it still
names the host the request moves it from) and that no unfinished request is there. The
source host marks it Running only if no request changed since it counted the limits
(a compare on the whole prefix), so two hosts cannot both take the fleet's last slot.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from kvmrec.api.objects import ObjectKey
from kvmrec.store.etcd.fencing import Fence
from kvmrec.store.etcd.gateway import (
    Gateway,
    KeyValue,
    compare,
    delete_op,
    encode,
    prefix_end,
    put_op,
)
from kvmrec.store.fleet_records import Migration


class EtcdMigrations:
    """The Migrations of a fleet; ``fence`` guards a host's writes (None: an operator's)."""

    def __init__(self, gateway: Gateway, prefix: str = "/kvmrec", fence: Fence | None = None):
        self._gateway = gateway
        self._prefix = f"{prefix}/migrations/".encode()
        self._placements = f"{prefix}/placements/".encode()
        self._fence = fence

    @property
    def prefix(self) -> str:
        return self._prefix.decode()

    def key(self, key: ObjectKey) -> bytes:
        return self._prefix + f"{key.kind}/{key.name}".encode()

    def migrations(self) -> tuple[Mapping[ObjectKey, Migration], int]:
        result = self._gateway.range(self._prefix, prefix=True)
        found: dict[ObjectKey, Migration] = {}
        for kv in result.kvs:
            kind, _, name = kv.key[len(self._prefix) :].decode().partition("/")
            found[ObjectKey(kind, name)] = _migration(ObjectKey(kind, name), kv)
        return found, result.revision

    def migration(self, key: ObjectKey) -> Migration | None:
        kv = self._gateway.get(self.key(key))
        return _migration(key, kv) if kv else None

    def request(self, migration: Migration, placement_revision: int) -> bool:
        key = migration.key
        placement = self._placements + f"{key.kind}/{key.name}".encode()
        compares = [
            compare(placement, "MOD", placement_revision),
            _at(self.key(key), migration.revision),
            *self._guards(),
        ]
        put = put_op(self.key(key), _value(migration))
        return self._gateway.txn(compares, [put]).succeeded

    def update(self, migration: Migration) -> bool:
        compares = [_at(self.key(migration.key), migration.revision), *self._guards()]
        put = put_op(self.key(migration.key), _value(migration))
        return self._gateway.txn(compares, [put]).succeeded

    def start(self, migration: Migration, seen: int) -> bool:
        unchanged = {
            "key": encode(self._prefix),
            "range_end": encode(prefix_end(self._prefix)),
            "target": "MOD",
            "result": "LESS",
            "mod_revision": str(seen + 1),
        }
        running = _replace(migration, state="Running", reason="")
        compares = [unchanged, _at(self.key(migration.key), migration.revision), *self._guards()]
        return self._gateway.txn(
            compares, [put_op(self.key(migration.key), _value(running))]
        ).succeeded

    def remove(self, key: ObjectKey, revision: int) -> bool:
        compares = [_at(self.key(key), revision), *self._guards()]
        return self._gateway.txn(compares, [delete_op(self.key(key))]).succeeded

    def _guards(self) -> Sequence[Mapping[str, Any]]:
        return self._fence.guards() if self._fence is not None else ()


def _at(key: bytes, revision: int) -> dict[str, Any]:
    return compare(key, "CREATE", 0) if revision == 0 else compare(key, "MOD", revision)


def _replace(migration: Migration, **changes: Any) -> Migration:
    return dataclasses.replace(migration, **changes)


def _value(m: Migration) -> bytes:
    return json.dumps(
        {
            "source": m.source,
            "to": m.to,
            "requested": m.requested.isoformat(),
            "state": m.state,
            "reason": m.reason,
            "copy_storage": m.copy_storage,
            "mode": m.mode,
            "progress": dict(m.progress),
            "cancel": m.cancel,
        }
    ).encode()


def _migration(key: ObjectKey, kv: KeyValue) -> Migration:
    data = json.loads(kv.value)
    progress = data.get("progress") or {}
    return Migration(
        key=key,
        source=str(data.get("source", "")),
        to=str(data.get("to", "")),
        requested=datetime.fromisoformat(data["requested"]),
        state=data.get("state", "Pending"),
        reason=str(data.get("reason", "")),
        copy_storage=bool(data.get("copy_storage", False)),
        mode="restart" if data.get("mode") == "restart" else "live",
        progress={str(k): int(v) for k, v in progress.items()},
        cancel=bool(data.get("cancel", False)),
        revision=kv.mod_revision,
    )
