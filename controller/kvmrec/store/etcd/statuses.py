"""Statuses and events in etcd.

A status is one key per object and host (``P/status/KIND/NAME/HOST``): a host-scoped store
reads and writes its own host's entry, an unscoped one writes "-" and reads the newest
entry of each object. ``record`` (the status, its events and the reconcile's history
record) is one transaction that compares the status key as this client last saw it; a
reconcile that changed nothing (the same status but for its time, no events, an "ok"
outcome) writes nothing at all, so a fleet at rest costs etcd no writes.

Events are bounded as Kubernetes bounds its own: each is put on a lease of about an hour
(``event_ttl``), one lease shared by the events of ~10 minutes, so they expire by
themselves. An event's ``seq`` is its key's create revision: the events of one transaction
share it, and ``events(after=seq)`` never splits them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from kvmrec import logs
from kvmrec.api.objects import ObjectKey
from kvmrec.store import codec as store_codec
from kvmrec.store.base import StatusConflict, StoreError
from kvmrec.store.records import Event, ReconcileRecord, Status, StoredObject

from . import codec
from .client import Client, Conflict
from .gateway import EtcdError, KeyValue, put_op, range_op

EVENT_TTL = 3600  # seconds, as the apiserver's --event-ttl
# Keys read in one transaction (two ranges each): etcd refuses a transaction of more than
# --max-txn-ops operations, 128 by default.
_KEYS_A_READ = 64


class EventLease:
    """The lease new events go on: granted once, used for a sixth of its TTL, then another."""

    def __init__(self, etcd: Client, ttl: int) -> None:
        self._etcd = etcd
        self.ttl = ttl
        self._reuse = max(ttl / 6, 1.0)
        self._lease = 0
        self._granted = 0.0
        self._lock = threading.Lock()

    def current(self) -> int:
        with self._lock:
            if not self._lease or time.monotonic() - self._granted > self._reuse:
                self._lease = self._etcd.call(self._etcd.gateway.grant, self.ttl)
                self._granted = time.monotonic()
            return self._lease

    def lost(self, lease: int) -> None:
        with self._lock:
            if self._lease == lease:
                self._lease = 0


def _lease_gone(exc: StoreError) -> bool:
    cause = exc.__cause__
    return isinstance(cause, EtcdError) and "lease not found" in str(cause)


def _same_but_time(stored: bytes, body: bytes) -> bool:
    old: dict[str, Any] = json.loads(stored)
    new: dict[str, Any] = json.loads(body)
    old.pop("lastReconcileTime", None)
    new.pop("lastReconcileTime", None)
    return old == new


class StatusKeys:
    """The ``Statuses`` part of the etcd store."""

    _etcd: Client
    _event_lease: EventLease

    def _status_key(self, key: ObjectKey) -> bytes:
        return self._etcd.layout.status(key, self._etcd.host)

    def _status_range(self, key: ObjectKey) -> dict[str, Any]:
        if self._etcd.host is not None:
            return range_op(self._status_key(key))
        return range_op(self._etcd.layout.statuses(key), prefix=True)

    def _pick(self, key: ObjectKey, kvs: Sequence[KeyValue]) -> Status | None:
        """This store's status of ``key`` among its entries (remembering its own)."""
        own = self._status_key(key)
        self._etcd.remember_read(own, next((kv for kv in kvs if kv.key == own), None))
        if self._etcd.host is not None:
            kvs = [kv for kv in kvs if kv.key == own]
        newest = max(kvs, key=lambda kv: kv.mod_revision, default=None)
        return store_codec.status(newest.value.decode()) if newest else None

    def get_status(self, key: ObjectKey) -> Status | None:
        [found] = self._etcd.read_many([self._status_range(key)])
        return self._pick(key, found.kvs)

    def get_with_status(self, key: ObjectKey) -> tuple[StoredObject | None, Status | None]:
        return self.get_many_with_status([key])[key]

    def get_many_with_status(
        self, keys: Sequence[ObjectKey]
    ) -> Mapping[ObjectKey, tuple[StoredObject | None, Status | None]]:
        layout = self._etcd.layout
        found: dict[ObjectKey, tuple[StoredObject | None, Status | None]] = {}
        for start in range(0, len(keys), _KEYS_A_READ):
            chunk = keys[start : start + _KEYS_A_READ]
            ranges = [
                op
                for key in chunk
                for op in (range_op(layout.object(key)), self._status_range(key))
            ]
            results = self._etcd.read_many(ranges)
            for i, key in enumerate(chunk):
                obj, statuses = results[2 * i], results[2 * i + 1]
                kv = obj.kvs[0] if obj.kvs else None
                self._etcd.remember_read(layout.object(key), kv)
                stored = codec.stored_object(key, kv.value) if kv else None
                found[key] = (stored, self._pick(key, statuses.kvs))
        return found

    def statuses(self) -> Mapping[ObjectKey, Status]:
        newest: dict[ObjectKey, KeyValue] = {}
        for kv in self._etcd.scan(self._etcd.layout.statuses()):
            key, host = self._etcd.layout.status_owner(kv.key)
            if self._etcd.host is not None and host != self._etcd.host:
                continue
            if key not in newest or kv.mod_revision > newest[key].mod_revision:
                newest[key] = kv
        return {key: store_codec.status(kv.value.decode()) for key, kv in newest.items()}

    def host_statuses(
        self, key: ObjectKey | None = None
    ) -> Sequence[tuple[ObjectKey, str | None, Status]]:
        layout = self._etcd.layout
        found = []
        for kv in self._etcd.scan(layout.statuses(key)):
            owner, host = layout.status_owner(kv.key)
            found.append((owner, host, store_codec.status(kv.value.decode())))
        return sorted(found, key=lambda entry: (entry[0], entry[1] or ""))

    def record(
        self,
        key: ObjectKey,
        status: Status,
        events: Sequence[tuple[str, str, str]],
        now: datetime,
        *,
        reconcile: ReconcileRecord | None = None,
    ) -> None:
        etcd = self._etcd
        etcd.check_writable()
        where = self._status_key(key)
        body = store_codec.status_body(status).encode()
        values = [codec.event_value(key, *event, now) for event in events]
        cached = etcd.cached(where)
        if cached is None:
            etcd.read(where)
            cached = etcd.cached(where) or (0, None)
        mod_revision, stored = cached
        quiet = not values and (reconcile is None or reconcile.result == "ok")
        if quiet and stored is not None and _same_but_time(stored, body):
            return
        history = (
            [put_op(etcd.layout.new_history(key), codec.reconcile_value(reconcile))]
            if reconcile is not None
            else []
        )
        compares = [etcd.expect(where, mod_revision)]
        try:
            done = self.write_with_events(compares, [put_op(where, body), *history], key, values)
        except Conflict as exc:
            etcd.forget([where])  # read it again next time
            # What the reconcile did is still told: its events and history record.
            self.write_with_events((), history, key, values)
            _log_events(key, events)
            raise StatusConflict(
                f"{etcd.where}: the status was written by another client since it was read here"
            ) from exc
        except StoreError:
            etcd.forget([where])
            raise
        etcd.remember({where: body}, done)
        _log_events(key, events)

    def write_with_events(
        self,
        compares: Sequence[Mapping[str, Any]],
        ops: Sequence[Mapping[str, Any]],
        key: ObjectKey | None,
        events: Sequence[bytes],
    ) -> int:
        """One transaction of ``ops`` and ``events`` of ``key`` (encoded by
        ``codec.event_value``, on the event lease) under ``compares`` and the fence; its
        revision (Conflict when a compare failed)."""
        return self.write_with_events_of(compares, ops, [(key, value) for value in events])

    def write_with_events_of(
        self,
        compares: Sequence[Mapping[str, Any]],
        ops: Sequence[Mapping[str, Any]],
        events: Sequence[tuple[ObjectKey | None, bytes]],
    ) -> int:
        """``write_with_events`` for events of several objects, each with its own. A
        lease that expired under us is replaced once."""
        for attempt in (1, 2):
            lease = self._event_lease.current() if events else 0
            puts = [
                put_op(self._etcd.layout.new_event(key, i), value, lease)
                for i, (key, value) in enumerate(events)
            ]
            try:
                return self._etcd.write(compares, [*ops, *puts]).revision
            except StoreError as exc:
                if attempt == 2 or not _lease_gone(exc):
                    raise
                self._event_lease.lost(lease)
        raise AssertionError("unreachable")

    def add_event(
        self, key: ObjectKey | None, type_: str, reason: str, message: str, now: datetime
    ) -> None:
        self._etcd.check_writable()
        self.write_with_events((), (), key, [codec.event_value(key, type_, reason, message, now)])
        logs.event(key, type_, reason, message)

    def events(
        self, key: ObjectKey | None = None, limit: int = 100, *, after: int | None = None
    ) -> Sequence[Event]:
        prefix = self._etcd.layout.events(key)
        if after is None:
            found = self._etcd.range(
                prefix, prefix=True, limit=limit, sort_target="CREATE", sort_order="DESCEND"
            )
            kvs = list(found.kvs)
        else:
            found = self._etcd.range(
                prefix,
                prefix=True,
                limit=limit,
                min_create_revision=after + 1,
                sort_target="CREATE",
                sort_order="ASCEND",
            )
            kvs = list(found.kvs)
            if found.more and kvs:
                # The limit may cut the events of one transaction: take all of the last.
                last = kvs[-1].create_revision
                group = self._etcd.scan(prefix, min_create_revision=last, max_create_revision=last)
                kvs = [kv for kv in kvs if kv.create_revision != last] + list(group)
        kvs.sort(key=lambda kv: (kv.create_revision, kv.key.rsplit(b"/", 1)[-1]))
        return [codec.event(kv.value, kv.create_revision) for kv in kvs]


def _log_events(key: ObjectKey, events: Sequence[tuple[str, str, str]]) -> None:
    for type_, reason, message in events:
        logs.event(key, type_, reason, message)
