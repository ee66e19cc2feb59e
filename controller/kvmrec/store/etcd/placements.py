"""Where each Domain runs, in etcd: ``P/placements/KIND/NAME`` holds ``{host, reason, time}``.

Every decision is written in a transaction that compares what the scheduler read (the
placement's mod revision, or its absence), that the chosen host is still registered, and
the scheduler's fence (its leadership): two schedulers racing for one Domain cannot both
win, and a scheduler that lost its leadership cannot place at all. A pass's new
placements go ``BATCH`` to a transaction; a batch that loses a compare is written one by
one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from kvmrec import logs
from kvmrec.api.objects import ObjectKey
from kvmrec.store.etcd import codec
from kvmrec.store.etcd.client import Conflict
from kvmrec.store.etcd.fencing import Fence
from kvmrec.store.etcd.gateway import Gateway, KeyValue, compare, delete_op, put_op
from kvmrec.store.fleet import Change, Placed, Placing
from kvmrec.store.fleet_records import Placement

# The store's writer of a transaction with events (statuses.StatusKeys.write_with_events_of):
# (compares, ops, each event's object and encoded event) -> revision; Conflict when a
# compare failed.
EventWriter = Callable[
    [
        Sequence[Mapping[str, Any]],
        Sequence[Mapping[str, Any]],
        Sequence[tuple[ObjectKey | None, bytes]],
    ],
    int,
]
# New placements a transaction: two operations each (the placement, its event) and two
# compares, well within etcd's default --max-txn-ops of 128 with the fence's guards.
BATCH = 32


class EtcdPlacements:
    """The Placements of a fleet; ``fence`` guards every write (None: unguarded, for
    tools that run without an election, such as tests). ``events`` writes a placement
    with its event in one transaction (under the store's own fence, the same lease); without
    it a placement's event is refused."""

    def __init__(
        self,
        gateway: Gateway,
        prefix: str = "/kvmrec",
        fence: Fence | None = None,
        events: EventWriter | None = None,
    ):
        self._gateway = gateway
        self._prefix = f"{prefix}/placements/".encode()
        self._store_prefix = prefix
        self._fence = fence
        self._events = events

    def key(self, key: ObjectKey) -> bytes:
        return self._prefix + f"{key.kind}/{key.name}".encode()

    def placement(self, key: ObjectKey) -> Placed | None:
        kv = self._gateway.get(self.key(key))
        return _placed(key, kv) if kv else None

    def placements(self, kind: str | None = None) -> Mapping[ObjectKey, Placed]:
        start = self._prefix + (f"{kind}/".encode() if kind else b"")
        found: dict[ObjectKey, Placed] = {}
        for kv in self._gateway.range(start, prefix=True).kvs:
            key = self._object_key(kv.key.decode())
            if key is not None:
                found[key] = _placed(key, kv)
        return found

    def placement_change(self, change: Change) -> tuple[ObjectKey, str | None] | None:
        key = self._object_key(change.key)
        if key is None:
            return None
        if change.type == "DELETE" or not change.value:
            return key, None
        try:
            host = json.loads(change.value).get("host")
        except ValueError:
            return key, None
        return key, host if isinstance(host, str) else None

    def _object_key(self, raw: str) -> ObjectKey | None:
        """The Domain a placement's etcd key names (None: not a placement's key)."""
        prefix = self._prefix.decode()
        if not raw.startswith(prefix):
            return None
        kind, _, name = raw[len(prefix) :].partition("/")
        return ObjectKey(kind, name) if kind and name and "/" not in name else None

    def place(
        self,
        key: ObjectKey,
        host: str,
        reason: str,
        expected: int | None,
        now: datetime,
        event: tuple[str, str, str] | None = None,
    ) -> bool:
        if event is not None:
            return self._write([Placing(key, host, reason, event)], now, expected)
        compares = [_at(self.key(key), expected), host_registered(self._store_prefix, host)]
        ops = [put_op(self.key(key), placement_value(host, reason, now))]
        return self._gateway.txn([*compares, *self._guards()], ops).succeeded

    def place_new(self, placings: Sequence[Placing], now: datetime) -> Sequence[ObjectKey]:
        placed: list[ObjectKey] = []
        for start in range(0, len(placings), BATCH):
            batch = placings[start : start + BATCH]
            if self._write(batch, now):
                placed.extend(p.key for p in batch)
                continue
            for p in batch:  # some compare failed: each on its own
                if self._write([p], now):
                    placed.append(p.key)
        return placed

    def _write(self, batch: Sequence[Placing], now: datetime, expected: int | None = None) -> bool:
        """One transaction of ``batch``, each placement with its event; each compares its
        placement's revision with ``expected`` (None: unplaced) and that its host is live."""
        if self._events is None:
            raise ValueError("these placements write no events")
        hosts = sorted({p.host for p in batch})
        compares = [
            *(_at(self.key(p.key), expected) for p in batch),
            *(host_registered(self._store_prefix, host) for host in hosts),
        ]
        ops = [put_op(self.key(p.key), placement_value(p.host, p.reason, now)) for p in batch]
        events = [(p.key, codec.event_value(p.key, *p.event, now)) for p in batch]
        try:
            self._events(compares, ops, events)
        except Conflict:
            return False
        for p in batch:
            logs.event(p.key, *p.event)
        return True

    def unplace(self, key: ObjectKey, expected: int) -> bool:
        compares = [_at(self.key(key), expected), *self._guards()]
        return self._gateway.txn(compares, [delete_op(self.key(key))]).succeeded

    def _guards(self) -> Sequence[Mapping[str, Any]]:
        return self._fence.guards() if self._fence is not None else ()


def _at(key: bytes, expected: int | None) -> dict[str, Any]:
    return compare(key, "CREATE", 0) if expected is None else compare(key, "MOD", expected)


def _placed(key: ObjectKey, kv: KeyValue) -> Placed:
    data = json.loads(kv.value)
    placement = Placement(
        key=key,
        host=str(data["host"]),
        reason=str(data.get("reason", "")),
        time=datetime.fromisoformat(data["time"]),
    )
    return Placed(placement, kv.mod_revision)


def placement_value(host: str, reason: str, now: datetime) -> bytes:
    """A placement's record: the host, why, and since when."""
    return json.dumps({"host": host, "reason": reason, "time": now.isoformat()}).encode()


def host_registered(prefix: str, host: str) -> dict[str, Any]:
    """The compare that ``host`` is registered under the store's ``prefix``: nothing is
    placed on a host that is not."""
    return compare(f"{prefix}/hosts/{host}".encode(), "CREATE", 0, "GREATER")
