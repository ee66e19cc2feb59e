"""Plans: the steps a reconciler would take, shared by every kind.

A reconciler decides on a ``Plan`` and then carries it out; ``kvmrec plan`` prints the
plan and stops. Both therefore run the same decision code and can never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kvmrec.store.records import Drift


@dataclass(frozen=True)
class Step:
    """One thing the reconciler would do. ``action`` is what ``kvmrec plan`` prints."""

    action: str
    fields: tuple[Drift, ...] = ()
    detail: str = ""
    visible: bool = True  # False for kvmrec's own bookkeeping (the ownership stamp)
    item: int | None = None  # which item of a list field the step acts on (a disk's index)


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...] = ()
    blocked: str | None = None  # why nothing can be done until the input changes
    blocked_reason: str = ""
    wait: float | None = None  # try again after this many seconds (backoff, dependencies)
    wait_reason: str = ""
    wait_message: str = ""

    @property
    def visible(self) -> list[Step]:
        return [s for s in self.steps if s.visible]


def plan_fields(steps: Sequence[Step]) -> list[dict[str, Any]]:
    """The ``fields`` of plan steps in the JSON contract's shape."""
    return [
        {"field": d.field, "desired": d.desired, "actual": d.actual}
        for step in steps
        for d in step.fields
    ]
