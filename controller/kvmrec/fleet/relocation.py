"""The scheduler's HA pass: carry out fleet/recovery.py's decisions in the store.

Each relocation is one transaction: the placement moved, compared against the revision
the pass read (a migration or another scheduler that moved it first wins, and the next
pass decides again); the Domain's fleet-level status counting it (``details.relocations``,
so that no relocation goes uncounted whatever dies after); the old host's status of it
forgotten (the guest is the new host's now); and the event. Events:
``Relocated``; ``RelocationFailed`` (no host takes it; said once per message);
``HAFailed`` (``maxRelocations`` spent; the Domain is left to the operator).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from kvmrec.api.kinds import ObjectKey
from kvmrec.fleet import recovery
from kvmrec.fleet.scheduling import DEFAULT_OVERCOMMIT, Domain, Overcommit
from kvmrec.store.fleet import FleetStatuses, Move, Placements
from kvmrec.store.fleet_records import HostRecord
from kvmrec.store.records import Status, StoredObject

log = logging.getLogger(__name__)


class Relocator:
    """Relocates the HA Domains of dead hosts, pass by pass (while leading)."""

    def __init__(
        self,
        *,
        store: FleetStatuses,
        placements: Placements,
        window: float,
        clock: Callable[[], float],
        overcommit: Overcommit = DEFAULT_OVERCOMMIT,
        wake: Callable[[], None] | None = None,
    ) -> None:
        """``wake``: asks for a pass soon (the scheduler's), called once a host's window
        has passed, so recovery does not wait for the next periodic pass."""
        self._store = store
        self._placements = placements
        self.windows = recovery.FencingWindows(window, clock)
        self._overcommit = overcommit
        self._wake = wake

    def run_once(
        self,
        hosts: Sequence[HostRecord],
        domains: Sequence[Domain],
        host_level: Iterable[StoredObject],
        statuses: Mapping[ObjectKey, Mapping[str | None, Status]],
        now: datetime,
    ) -> int:
        """One pass; returns how many Domains were relocated."""
        for _host in self.windows.observe(hosts):
            if self._wake is not None:  # first seen away: a pass once its window is over
                timer = threading.Timer(self.windows.window + 0.1, self._wake)
                timer.daemon = True
                timer.start()
        placed = self._placements.placements("Domain")  # after this pass's placements
        placements = {k: p.placement for k, p in placed.items()}
        actions = recovery.decide(
            hosts,
            domains,
            placements,
            host_level,
            statuses,
            self.windows,
            overcommit=self._overcommit,
        )
        moved = 0
        for action in actions:
            fleet = statuses.get(action.key, {}).get(None)
            if isinstance(action, recovery.Relocate):
                moved += self._relocate(action, placed[action.key].revision, fleet, now)
            elif isinstance(action, recovery.NoTarget):
                self._say(action.key, fleet, "RelocationFailed", action.message, now)
            else:
                self._say(action.key, fleet, "HAFailed", action.message, now)
        return moved

    def _relocate(
        self, action: recovery.Relocate, revision: int, fleet: Status | None, now: datetime
    ) -> int:
        reason = f"relocated from {action.source} ({action.why}): {action.reason}"
        message = f"{action.why}: relocated to {action.target} ({action.count} of its relocations)"
        status = (fleet or Status()).with_condition("Ready", "True", "Relocated", message, now)
        status = replace(
            status,
            details={**status.details, recovery.RELOCATIONS: action.count},
            last_reconcile_time=now,
        )
        move = Move(action.source, action.target, reason, revision)
        event = ("Normal", "Relocated", message)
        if not self._store.relocate(action.key, move, status, event, now):
            return 0  # moved or removed meanwhile: the next pass looks again
        log.warning("%s: %s", action.key, message)
        return 1

    def _say(
        self, key: ObjectKey, fleet: Status | None, reason: str, message: str, now: datetime
    ) -> None:
        ready = fleet.condition("Ready") if fleet is not None else None
        if ready is not None and ready.reason == reason and ready.message == message:
            return
        status = (fleet or Status()).with_condition("Ready", "False", reason, message, now)
        status = replace(status, last_reconcile_time=now, last_error=message)
        self._store.record_for(None, key, status, [("Warning", reason, message)], now)
