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
    for found in store.convergence().values():
        if not found.current:
            if retries_pending or found.deleting or found.observed_generation is None:
                return False
            continue  # failed permanently on this generation
        if not found.converged and retries_pending:
            return False
    return True


def converged_count(store: Store) -> tuple[int, int]:
    """(objects synced and ready at their generation, all objects)."""
    found = store.convergence().values()
    return sum(1 for c in found if c.current and c.converged), len(found)
