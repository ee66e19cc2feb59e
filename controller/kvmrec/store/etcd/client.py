"""The store's side of etcd: reads that remember what they saw, and guarded writes.

Every write is one transaction whose compares are what this client last read or wrote of
the keys it changes (their mod revision, or "does not exist" for a key it creates), plus
the fence's guards. ``Conflict`` tells the caller another writer got there first: an
idempotent operation re-reads and tries again, any other raises StoreError so the
reconcile is retried. The cache of (mod revision, value) per key is also what lets a write
that would change nothing be skipped without asking etcd.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from kvmrec.store.base import StoreError

from .fencing import Fence, Fenced
from .gateway import (
    EtcdError,
    EtcdUnavailable,
    Gateway,
    KeyValue,
    RangeResult,
    TxnResult,
    compare,
    range_response,
)
from .keys import Layout

T = TypeVar("T")

# How often an idempotent write re-reads and tries again before giving up.
ATTEMPTS = 20


def backoff(attempt: int) -> None:
    """A short random pause before try ``attempt`` + 1, so racing writers spread out."""
    if attempt:
        time.sleep(random.uniform(0, min(0.005 * attempt, 0.05)))


class Conflict(StoreError):
    """A compare did not hold: another writer changed a key since this client read it."""


class Client:
    """One etcd store's connection (shared by threads), its layout, fence and cache."""

    def __init__(
        self,
        gateway: Gateway,
        layout: Layout,
        *,
        host: str | None,
        fence: Fence | None,
        read_only: bool,
    ) -> None:
        self.gateway = gateway
        self.layout = layout
        self.host = host
        self.fence = fence
        self.read_only = read_only
        # Kinds whose one object several hosts apply (a Network on every host): a host
        # that removes one removes only its own status; the fleet's scheduler forgets the
        # object once no host has any left.
        self.shared_kinds: frozenset[str] = frozenset()
        self._cache: dict[bytes, tuple[int, bytes | None]] = {}
        self._lock = threading.Lock()
        # The threads of one process take turns to write objects: racing each other
        # through etcd's compares would only cost retries.
        self.objects_lock = threading.Lock()
        host_, port = gateway.endpoints[0]
        self.where = f"etcd at {host_}:{port}{layout.prefix}"

    # -- calling etcd ------------------------------------------------------------------

    def call(self, request: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One request, etcd's failures as StoreError."""
        try:
            return request(*args, **kwargs)
        except EtcdUnavailable as exc:
            raise StoreError(str(exc)) from exc
        except EtcdError as exc:
            raise StoreError(f"{self.where}: {exc}") from exc

    def range(self, key: bytes, **kwargs: Any) -> RangeResult:
        return self.call(self.gateway.range, key, **kwargs)

    def scan(self, prefix: bytes, **kwargs: Any) -> Sequence[KeyValue]:
        return self.range(prefix, prefix=True, **kwargs).kvs

    def read(self, key: bytes) -> KeyValue | None:
        """One key, remembered."""
        kvs = self.range(key).kvs
        kv = kvs[0] if kvs else None
        self.remember_read(key, kv)
        return kv

    def read_many(self, ranges: Sequence[Mapping[str, Any]]) -> list[RangeResult]:
        """Several ranges (``gateway.range_op``) at one revision, in one request."""
        answer = self.call(self.gateway.txn, (), ranges)
        return [range_response(response) for response in answer.responses]

    # -- the cache ---------------------------------------------------------------------

    def remember_read(self, key: bytes, kv: KeyValue | None) -> None:
        with self._lock:
            self._cache[key] = (kv.mod_revision, kv.value) if kv else (0, None)

    def remember(self, values: Mapping[bytes, bytes | None], revision: int) -> None:
        """What a successful write left: ``None`` for a key it deleted."""
        with self._lock:
            for key, value in values.items():
                self._cache[key] = (revision if value is not None else 0, value)

    def forget(self, keys: Iterable[bytes]) -> None:
        with self._lock:
            for key in keys:
                self._cache.pop(key, None)

    def forget_prefix(self, prefix: bytes) -> None:
        with self._lock:
            for key in [k for k in self._cache if k.startswith(prefix)]:
                del self._cache[key]

    def cached(self, key: bytes) -> tuple[int, bytes | None] | None:
        with self._lock:
            return self._cache.get(key)

    def expect(self, key: bytes, mod_revision: int) -> dict[str, Any]:
        """The compare that ``key`` is as read: at ``mod_revision``, or absent (0)."""
        if mod_revision:
            return compare(key, "MOD", mod_revision)
        return compare(key, "CREATE", 0)

    # -- writing -----------------------------------------------------------------------

    def check_writable(self) -> None:
        if self.read_only:
            raise StoreError(f"{self.where}: opened read-only")

    def write(
        self, compares: Sequence[Mapping[str, Any]], ops: Sequence[Mapping[str, Any]]
    ) -> TxnResult:
        """One guarded transaction; Conflict when a compare of the caller's failed, Fenced
        when the fence's did."""
        self.check_writable()
        guards = list(self.fence.guards()) if self.fence is not None else []
        result = self.call(self.gateway.txn, [*compares, *guards], ops)
        if result.succeeded:
            return result
        if guards and not self.call(self.gateway.txn, guards, ()).succeeded:
            raise Fenced(f"{self.where}: this host's lease is lost; its writes are refused")
        raise Conflict(f"{self.where}: changed by another writer meanwhile; try again")

    def close(self) -> None:
        self.gateway.close()
