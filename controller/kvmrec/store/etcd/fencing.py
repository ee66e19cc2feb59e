"""The hook that keeps a host that lost its lease from overwriting what others wrote.

A ``Fence`` gives compares that every write transaction of the store carries (a host's
lease: the compare of its registration key's LEASE with the lease id). When one of them
does not hold, the write is refused with ``Fenced`` and never retried: the host must
re-register and re-list before it acts again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from kvmrec.store.base import StoreError


class Fenced(StoreError):
    """This client's fence no longer holds: its writes are refused."""


class Fence(Protocol):
    def guards(self) -> Sequence[Mapping[str, Any]]:
        """Compares (``gateway.compare``) added to every write; raises ``Fenced`` when the
        fence already knows it is lost."""
        ...
