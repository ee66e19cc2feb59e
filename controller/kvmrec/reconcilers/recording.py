"""Writing status, and an event for every condition that changes.

Every reconciler ends by handing the new status here; comparing it with the previous one
gives the condition transitions, each recorded as an event so ``kvmrec events`` tells the
story of an object without anyone having to diff statuses by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from kvmrec.api.kinds import ObjectKey
from kvmrec.store.base import Store
from kvmrec.store.records import Status

# Conditions whose True state is bad news.
_ABNORMAL_WHEN_TRUE = {"RestartRequired", "Degraded"}


def commit(
    store: Store,
    key: ObjectKey,
    old: Status | None,
    new: Status,
    now: datetime,
    events: Sequence[tuple[str, str, str]] = (),
) -> None:
    """Store ``new`` with ``events`` (type, reason, message) and one more event for every
    condition whose status or reason changed, in one write."""
    transitions: list[tuple[str, str, str]] = []
    for cond in new.conditions:
        before = old.condition(cond.type) if old else None
        if before is not None and before.status == cond.status and before.reason == cond.reason:
            continue
        if before is None and cond.status == "Unknown":
            continue
        bad = (cond.status == "True") == (cond.type in _ABNORMAL_WHEN_TRUE)
        message = f"{cond.type}={cond.status} ({cond.reason})"
        if cond.message:
            message += f": {cond.message}"
        transitions.append(("Warning" if bad else "Normal", cond.reason, message))
    store.record(key, new, [*events, *transitions], now)
