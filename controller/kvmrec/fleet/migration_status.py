"""How a host's migrations speak (fleet/migration.py's ``Reporter`` and ``Clock``): the
Domain's ``Migrating`` condition in this host's status while it moves, its end as an event,
and the status forgotten here once the guest is another host's."""

from __future__ import annotations

import time
from datetime import datetime

from kvmrec.api.kinds import ObjectKey
from kvmrec.engine import clock as clocks
from kvmrec.store.base import Store
from kvmrec.store.fleet import FleetStatuses
from kvmrec.store.records import Status


class MigrationReporter:
    """A migration's progress and end in the Domain's status (this host's) and events."""

    def __init__(self, store: Store, fleet: FleetStatuses, host: str, clock: clocks.Clock):
        self._store = store
        self._fleet = fleet
        self._host = host
        self._clock = clock

    def migrating(self, key: ObjectKey, message: str) -> None:
        now = self._clock.wall()
        status = (self._store.get_status(key) or Status()).with_condition(
            "Migrating", "True", "Migrating", message, now
        )
        self._store.record(key, status, [], now)

    def ended(self, key: ObjectKey, type_: str, reason: str, message: str) -> None:
        now = self._clock.wall()
        old = self._store.get_status(key)
        if reason in ("Migrated", "Evicted"):
            # The guest is another host's now: its status there is the one that counts.
            self._fleet.forget_status(key, self._host)
            self._store.add_event(key, type_, reason, message, now)
        elif old is not None and old.condition("Migrating") is not None:
            status = old.with_condition("Migrating", "False", reason, message, now)
            self._store.record(key, status, [(type_, reason, message)], now)
        else:
            self._store.add_event(key, type_, reason, message, now)


class MigrationClock:
    """Real time for the migration's waits; the service's clock for what it records."""

    def __init__(self, clock: clocks.Clock) -> None:
        self._clock = clock

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def wall(self) -> datetime:
        return self._clock.wall()
