"""Writing status, and an event for every condition that changes.

Every reconciler ends by handing the new status here; comparing it with the previous one
gives the condition transitions, each recorded as an event so ``kvmrec events`` tells the
story of an object without anyone having to diff statuses by hand (the store logs each).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime

from kvmrec.api.kinds import ObjectKey
from kvmrec.backends.errors import BackendError, Unavailable
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


def failed(status: Status, exc: Exception, now: datetime) -> Status:
    """``status`` after a failed attempt: the error, one more retry."""
    return replace(status, last_error=str(exc), retries=status.retries + 1, last_reconcile_time=now)


def blocked(status: Status, reason: str, message: str, now: datetime) -> Status:
    """``status`` of an object that cannot converge until its input changes."""
    return replace(
        status.with_condition("Ready", "False", reason, message, now).with_condition(
            "Synced", "False", reason, message, now
        ),
        last_reconcile_time=now,
        last_error=message,
        drift=(),
    )


@contextmanager
def failures_recorded(
    store: Store,
    key: ObjectKey,
    old: Status | None,
    now: datetime,
    *,
    unavailable: str,
    errors: tuple[type[Exception], ...] = (BackendError,),
    written: list[Status] | None = None,
) -> Iterator[None]:
    """Record a failed reconcile in the object's status, then let the exception go on to
    the engine (which retries with backoff); ``written`` is told the status recorded.

    A daemon that cannot be reached makes ``Ready`` Unknown (reason ``unavailable``): kvmrec
    does not know how the object is. Any other failure makes ``Synced`` False."""
    status = old or Status()
    try:
        yield
    except Unavailable as exc:
        status = status.with_condition("Ready", "Unknown", unavailable, str(exc), now)
        _commit_failure(store, key, old, failed(status, exc, now), now, written)
        raise
    except errors as exc:
        status = status.with_condition("Synced", "False", "ReconcileFailed", str(exc), now)
        _commit_failure(store, key, old, failed(status, exc, now), now, written)
        raise


def _commit_failure(
    store: Store,
    key: ObjectKey,
    old: Status | None,
    status: Status,
    now: datetime,
    written: list[Status] | None,
) -> None:
    if store.get(key) is None:
        return  # deleted meanwhile: nothing to say it of
    commit(store, key, old, status, now)
    if written is not None:
        written.append(status)


def deletion_held(status: Status, reason: str, message: str, now: datetime) -> Status:
    """``status`` of an object whose deletion waits (its users are still there)."""
    return replace(
        status.with_condition("Synced", "False", reason, message, now), last_reconcile_time=now
    )
