"""``EtcdStore``: every part of the ``Store`` interface on keys under one etcd prefix."""

from __future__ import annotations

from .client import Client
from .fencing import Fence
from .gateway import Gateway, parse_endpoints
from .history import HistoryKeys
from .keys import Layout
from .ledger import LedgerKeys
from .objects import ObjectKeys
from .sources import SourceKeys
from .statuses import EVENT_TTL, EventLease, StatusKeys

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
        # Of this store's prefix alone, not etcd's revision, which every other writer of
        # the cluster moves: the newest mod revision under the prefix and how many keys it
        # holds. A put raises the first, a deletion (a lease's expiry too) lowers the
        # second, and one range reads both: the newest key alone, with the count of all.
        layout = self._etcd.layout
        newest = self._etcd.range(
            layout.root,
            prefix=True,
            limit=1,
            keys_only=True,
            sort_target="MOD",
            sort_order="DESCEND",
        )
        revision = newest.kvs[0].mod_revision if newest.kvs else 0
        return revision << 32 | newest.count

    def close(self) -> None:
        self._etcd.close()
