"""The store of a fleet: desired state, status, events and history in etcd (``etcd://``).

``gateway`` is the client of etcd's JSON gateway (the only module that speaks HTTP to
etcd), ``client`` the guarded writes and the cache of what was last seen, ``keys`` the
layout under the prefix, ``codec`` the values; ``objects``, ``statuses``, ``history``,
``ledger`` and ``sources`` each implement one part of the ``Store`` interface, and
``EtcdStore`` puts them together. ``fencing`` is the hook a host's lease plugs into.
"""

from kvmrec.store.etcd.fencing import Fence, Fenced
from kvmrec.store.etcd.store import EtcdStore

__all__ = ["EtcdStore", "Fence", "Fenced"]
