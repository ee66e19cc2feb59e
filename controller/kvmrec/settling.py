"""Whether the service has settled: the question ``run --once`` and start-up progress ask.

An object is settled when it is synced and ready at its generation, or when nothing is left
to try until an input changes (it failed permanently on this generation). The service has
settled when the queue is idle and every object is; objects waiting for a retry keep it
unsettled, since the retry may still succeed.
"""

from __future__ import annotations

from kvmrec.api.kinds import ObjectKey
from kvmrec.engine.queue import WorkQueue
from kvmrec.store.base import Store


def settled(queue: WorkQueue[ObjectKey], store: Store) -> bool:
    """Every object converged, or nothing left to try until an input changes."""
    if queue.is_busy():
        return False
    retries_pending = queue.pending_delayed() > 0
    statuses = store.statuses()
    for obj in store.list():
        status = statuses.get(obj.key)
        if obj.deleting or status is None or status.observed_generation != obj.generation:
            if retries_pending or obj.deleting or status is None:
                return False
            continue  # failed permanently on this generation
        converged = status.is_true("Ready") and status.is_true("Synced")
        if not converged and retries_pending:
            return False
    return True


def converged_count(store: Store) -> tuple[int, int]:
    """(objects synced and ready at their generation, all objects)."""
    statuses = store.statuses()
    objects = store.list()
    done = 0
    for obj in objects:
        status = statuses.get(obj.key)
        if (
            status is not None
            and not obj.deleting
            and status.observed_generation == obj.generation
            and status.is_true("Ready")
            and status.is_true("Synced")
        ):
            done += 1
    return done, len(objects)
