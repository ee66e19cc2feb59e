"""``EtcdStore``: every part of the ``Store`` interface on keys under one etcd prefix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from kvmrec.api.objects import ObjectKey
from kvmrec.store.base import StoreError
from kvmrec.store.records import StatusWrite

from .client import Client
from .fencing import Fence
from .gateway import Gateway, parse_endpoints
from .history import HistoryKeys
from .keys import Layout
from .ledger import LedgerKeys
from .objects import ObjectKeys
from .sources import SourceKeys
from .statuses import EVENT_TTL, EventLease, StatusKeys

if TYPE_CHECKING:
    from kvmrec.store.convergence import Convergence

DEFAULT_PREFIX = "/kvmrec"


def parse_url(url: str) -> tuple[str, str]:
    """``etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`` as (endpoints, prefix)."""
    rest = url.split("://", 1)[1]
    endpoints, slash, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    return endpoints, f"/{prefix}" if slash and prefix else DEFAULT_PREFIX


class EtcdStore(ObjectKeys, StatusKeys, HistoryKeys, LedgerKeys, SourceKeys):
    """A ``Store`` in etcd under ``prefix``. ``host``: the host whose statuses this store
    reads and writes (None: an operator's view, reading the newest of every host's).
    ``fence``: compares every write carries (the host's lease)."""

    def __init__(
        self,
        endpoints: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        host: str | None = None,
        fence: Fence | None = None,
        read_only: bool = False,
        timeout: float = 5.0,
        event_ttl: int = EVENT_TTL,
    ) -> None:
        gateway = Gateway(parse_endpoints(endpoints), timeout=timeout)
        self._etcd = Client(gateway, Layout(prefix), host=host, fence=fence, read_only=read_only)
        self._event_lease = EventLease(self._etcd, event_ttl)

    @property
    def client(self) -> Client:
        return self._etcd

    def convergence(self) -> Mapping[ObjectKey, Convergence]:
        from kvmrec.store.convergence import convergence_of  # not for a read-only command

        return convergence_of(self.list(), self.statuses())

    def scoped(self, host: str | None) -> EtcdStore:
        """Another view of the same store that reads and writes ``host``'s statuses
        (None: the fleet's own), sharing its connections, fence and event lease."""
        view = object.__new__(EtcdStore)
        etcd = self._etcd
        view._etcd = Client(
            etcd.gateway, etcd.layout, host=host, fence=etcd.fence, read_only=etcd.read_only
        )
        view._event_lease = self._event_lease
        return view

    @property
    def prefix(self) -> str:
        return self._etcd.layout.prefix

    def change_counter(self) -> int:
        # etcd's revision, from the header of a range that only counts (1.3 ms with 5,000
        # keys under the prefix). Scoped to the prefix (its newest mod revision and its
        # count, from a sorted range) it would not move for other writers of the cluster,
        # but etcd reads every key for a sorted range: 10 ms, at each poll of a watch.
        layout = self._etcd.layout
        return self._etcd.range(layout.root, prefix=True, count_only=True, limit=1).revision

    def record_many(self, writes: Sequence[StatusWrite]) -> Sequence[StoreError | None]:
        # Each alone: a status write is guarded by the revision its writer read, and one
        # refused compare must not refuse the others.
        failures: list[StoreError | None] = []
        for write in writes:
            try:
                if write.status is None:
                    if write.reconcile is not None:
                        self.record_reconcile(write.reconcile)
                else:
                    self.record(
                        write.key, write.status, write.events, write.now, reconcile=write.reconcile
                    )
                failures.append(None)
            except StoreError as exc:
                failures.append(exc)
        return failures

    def close(self) -> None:
        self._etcd.close()
