"""A fence: what a writer adds to every transaction so that it cannot write once it lost
the lease (or the leadership) its writes depend on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from kvmrec.store.base import StoreError


class Fenced(StoreError):
    """The writer's lease is lost: it must stop acting until it is explicitly re-acquired."""


class Fence(Protocol):
    def guards(self) -> Sequence[Mapping[str, Any]]:
        """The compares to add to every write transaction; raises Fenced when the fence
        knows it is lost."""
