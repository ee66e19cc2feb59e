"""What settling asks of each stored object (``Statuses.convergence``).

Apart from records.py so that a read-only command, which imports the records, does not
build this class too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kvmrec.api.objects import ObjectKey
from kvmrec.store.records import Status, StoredObject


@dataclass(frozen=True)
class Convergence:
    """What settling asks of one object: its generation and whether it is being deleted,
    beside what its status says (``observed_generation`` None: no status yet)."""

    generation: int
    deleting: bool
    observed_generation: int | None
    converged: bool  # Ready and Synced are both True

    @property
    def current(self) -> bool:
        """A status of the object's generation, neither being deleted."""
        return not self.deleting and self.observed_generation == self.generation


def convergence_of(
    objects: Iterable[StoredObject], statuses: Mapping[ObjectKey, Status]
) -> dict[ObjectKey, Convergence]:
    """``Statuses.convergence`` from the objects and statuses read whole."""
    found = {}
    for obj in objects:
        status = statuses.get(obj.key)
        found[obj.key] = Convergence(
            obj.generation,
            obj.deleting,
            status.observed_generation if status is not None else None,
            status is not None and status.is_true("Ready") and status.is_true("Synced"),
        )
    return found
