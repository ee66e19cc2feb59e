"""What an operator does by hand through kvmrec (``kvmrec snapshot``, ``kvmrec guest``) is
recorded as an event of the domain, so ``kvmrec events`` tells the whole story of a guest.
Without a state file the operation still works, unrecorded."""

from __future__ import annotations

from pathlib import Path

from kvmrec import store as stores
from kvmrec.api.objects import ObjectKey
from kvmrec.engine.clock import SystemClock
from kvmrec.store.base import Statuses, StoreError


def open_store(path: Path) -> stores.Store | None:
    """The state file at ``path``, or None when there is none (nothing is recorded)."""
    try:
        return stores.open(path, create=False)
    except StoreError:
        return None


def record(store: Statuses | None, domain: str, reason: str, message: str) -> None:
    """A Normal event of Domain ``domain``, when there is a store."""
    if store is not None:
        store.add_event(
            ObjectKey("Domain", domain), "Normal", reason, message, SystemClock().wall()
        )
