"""Writing status, and an event for every condition that changes.

Every reconciler ends by handing the new status here; comparing it with the previous one
gives the condition transitions, each recorded as an event so ``kvmrec events`` tells the
story of an object without anyone having to diff statuses by hand (the store logs each).

Inside :func:`one_write` (the service wraps every reconcile in it) the status a reconcile
ends with, its events and the reconcile's history record go to the store as one
transaction when the reconcile returns, before anything else may act on that outcome: the
worker releases the key, and the service wakes what depends on it, only after. A
reconciler writes its status as its last step; a second status write in one reconcile
first sends the earlier one on its own. Reconciles run together (engine/stages.py) hand
their final writes over instead, and :func:`store_deferred` stores them in one go, before
any of their keys is released.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from kvmrec.api.kinds import ObjectKey
from kvmrec.backends.errors import BackendError, Unavailable
from kvmrec.engine.clock import Clock
from kvmrec.engine.contract import Outcome, PermanentError, Superseded
from kvmrec.store.base import History, StatusConflict, Statuses, Store
from kvmrec.store.records import ReconcileRecord, Status, StatusWrite

log = logging.getLogger(__name__)


class _Recorder(Statuses, History, Protocol):
    pass


@dataclass
class _Reconcile:
    """The reconcile of ``key`` under way on this thread, and the status write it holds."""

    key: ObjectKey
    held: tuple[Status, list[tuple[str, str, str]], datetime] | None = None


_current: ContextVar[_Reconcile | None] = ContextVar("reconcile", default=None)


# Where a reconcile run among others (engine/stages.py) leaves its final write: each write
# with whether its reconcile succeeded (a write that then fails fails that reconcile).
Deferred = list[tuple[StatusWrite, bool]]


@contextmanager
def one_write(
    store: _Recorder, key: ObjectKey, clock: Clock, *, deferred: Deferred | None = None
) -> Iterator[None]:
    """Run one reconcile of ``key``; its last status write, that write's events and the
    history record of the reconcile (ok, error or permanent) are stored together as it ends,
    or handed to ``deferred`` for whoever stores the writes of several reconciles at once.

    Failures keep a duration of 0 in history, as the engine does not time them."""
    started = time.perf_counter()
    current = _Reconcile(key)
    token = _current.set(current)
    try:
        yield
    except PermanentError as exc:
        record = ReconcileRecord(key, clock.wall(), 0.0, "permanent", str(exc))
        _flush(store, current, record, deferred)
        raise
    except Exception as exc:
        _flush(store, current, ReconcileRecord(key, clock.wall(), 0.0, "error", str(exc)), deferred)
        raise
    else:
        duration = time.perf_counter() - started
        record = ReconcileRecord(key, clock.wall(), duration, "ok")
        _flush(store, current, record, deferred, failed=False)
    finally:
        _current.reset(token)


def _flush(
    store: _Recorder,
    current: _Reconcile,
    record: ReconcileRecord,
    deferred: Deferred | None,
    *,
    failed: bool = True,
) -> None:
    """Store what ``current`` holds with ``record``. A status that cannot be stored fails a
    reconcile that succeeded (it is retried); a history record alone, or anything after a
    failure (whose own error must not be hidden), is logged instead."""
    status, events, now = current.held or (None, [], record.time)
    if deferred is not None:
        deferred.append((StatusWrite(current.key, status, events, now, record), not failed))
        return
    try:
        if status is None:
            store.record_reconcile(record)
        else:
            store.record(current.key, status, events, now, reconcile=record)
    except Exception as exc:
        if not failed and status is not None:
            raise _superseded(exc) from exc
        log.error("%s: reconcile not recorded: %s", current.key, exc)


def _superseded(failure: Exception) -> Exception:
    """What a successful reconcile whose status could not be stored raises: run again at
    once where another client wrote the status meanwhile, else the store's failure."""
    if isinstance(failure, StatusConflict):
        return Superseded(f"{failure}; reconciling again from a fresh read")
    return failure


def store_deferred(
    store: _Recorder, deferred: Deferred, outcomes: Mapping[ObjectKey, Outcome]
) -> None:
    """Store the writes several reconciles left in ``deferred`` (one transaction where the
    store can), each record with the real seconds its reconcile ran for; a write that
    fails fails its reconcile if that succeeded, as in :func:`one_write`."""
    writes = []
    for write, ok in deferred:
        record, outcome = write.reconcile, outcomes[write.key]
        if ok and record is not None:
            write = replace(write, reconcile=replace(record, duration=outcome.duration))
        writes.append(write)
    failures = store.record_many(writes) if writes else []
    for (write, ok), failure in zip(deferred, failures, strict=True):
        if failure is None:
            continue
        if ok and write.status is not None:
            outcome = outcomes[write.key]
            outcome.result, outcome.error = None, _superseded(failure)
        else:
            log.error("%s: reconcile not recorded: %s", write.key, failure)


# Conditions whose True state is bad news.
_ABNORMAL_WHEN_TRUE = {"RestartRequired", "Degraded", "BelowOSMinimum"}


def commit(
    store: Statuses,
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
    current = _current.get()
    if current is None or current.key != key:
        store.record(key, new, [*events, *transitions], now)
        return
    if current.held is not None:
        held, held_events, held_now = current.held
        store.record(key, held, held_events, held_now)
    current.held = (new, [*events, *transitions], now)


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
