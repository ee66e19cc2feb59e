"""One migration, carried out by the host the Domain is placed on (its source).

    Pending --(limits: 2 out of a host, 5 in the fleet)--> Running --> Succeeded
       |                                                      |   \\--> Failed
       +-- blocked (named before anything starts) --> Failed   \\----> Cancelled

What can block a migration is asked first (internal snapshots, a cdrom or disk on a local
path, a CPU the target lacks): the request then fails with the reason and nothing is
touched. Otherwise libvirt's peer-to-peer live migration runs while this module polls its
job every second: the progress (data remaining, rate) goes to the request at most every
``REPORT_EVERY`` seconds, and a job whose data remaining has not decreased for
``stall_timeout`` seconds is aborted, the guest staying where it was; so is one whose
request an operator marked (``kvmrec migrate --cancel``), read again at every poll.

The placement moves only after libvirt finished: one compare-and-swap from source to
target on the revision read before starting. If that fails, the guest is where libvirt
put it: the placement is set to that host (re-read, compared again) and it is said loudly;
the source never starts it again (its scope keeps the Domain out of its share).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from kvmrec.api.kinds import ObjectKey
from kvmrec.backends.protocols import LiveMigrations, MigrationJob, MigrationTarget
from kvmrec.store.fleet import Migrations, Placements
from kvmrec.store.fleet_records import Migration, MigrationState

log = logging.getLogger(__name__)

POLL = 1.0  # seconds between readings of the job
REPORT_EVERY = 3.0  # seconds between progress writes
STALL_TIMEOUT = 150.0  # KubeVirt's progressTimeout
MAX_OUTBOUND = 2  # per source host, as KubeVirt's parallelOutboundMigrationsPerNode
MAX_FLEET = 5  # in the fleet, as KubeVirt's parallelMigrationsPerCluster


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    def wall(self) -> datetime: ...


class Reporter(Protocol):
    """Where a migration tells how it goes: the Domain's status and events."""

    def migrating(self, key: ObjectKey, message: str) -> None: ...

    def ended(self, key: ObjectKey, type_: str, reason: str, message: str) -> None: ...


def over_limit(
    migrations: Mapping[ObjectKey, Migration],
    source: str,
    *,
    per_host: int = MAX_OUTBOUND,
    fleet: int = MAX_FLEET,
) -> str | None:
    """Why one more migration out of ``source`` must wait, or None when it may start."""
    running = [m for m in migrations.values() if m.state == "Running"]
    if len(running) >= fleet:
        return f"waiting: {len(running)} migrations running in the fleet (at most {fleet})"
    outbound = sum(1 for m in running if m.source == source)
    if outbound >= per_host:
        return f"waiting: {outbound} migrations running out of {source} (at most {per_host})"
    return None


@dataclass(frozen=True)
class Outcome:
    state: MigrationState
    reason: str
    runs_on: str  # the host the guest runs on afterwards


def ending(state: MigrationState) -> tuple[str, str]:
    """The event type and reason that say a migration ended in ``state``."""
    if state == "Succeeded":
        return "Normal", "Migrated"
    return "Warning", "MigrationCancelled" if state == "Cancelled" else "MigrationFailed"


def describe(progress: Mapping[str, int]) -> str:
    remaining = progress.get("data_remaining", 0)
    total = progress.get("data_total", 0)
    rate = progress.get("rate", 0)
    return f"{_mib(remaining)} of {_mib(total)} remaining, {_mib(rate)}/s"


def _mib(n: int) -> str:
    return f"{n / 1024**2:.1f} MiB"


class Runner:
    """Carries out one Running migration of this host's."""

    def __init__(
        self,
        *,
        backend: LiveMigrations,
        migrations: Migrations,
        placements: Placements,
        reporter: Reporter,
        clock: Clock,
        stall_timeout: float = STALL_TIMEOUT,
    ) -> None:
        self._backend = backend
        self._migrations = migrations
        self._placements = placements
        self._reporter = reporter
        self._clock = clock
        self._stall_timeout = stall_timeout

    def run(self, migration: Migration, target: MigrationTarget) -> Outcome:
        """Migrate, move the placement, and record how it ended."""
        key, name = migration.key, migration.key.name
        placed = self._placements.placement(key)
        if placed is None or placed.placement.host != migration.source:
            outcome = Outcome("Failed", "the placement changed before it started", "")
            return self._finish(migration, outcome)
        self._reporter.migrating(key, f"to {target.host}: starting")
        started = self._clock.monotonic()
        try:
            job = self._backend.begin(name, target, copy_storage=migration.copy_storage)
        except Exception as exc:  # refused at once: nothing moved
            return self._finish(migration, Outcome("Failed", str(exc), migration.source))
        migration, error, cancelled = self._follow(migration, job, target)
        elapsed = self._clock.monotonic() - started
        if error is None:
            completed = dict(job.completed())
            migration = dataclasses.replace(migration, progress={**migration.progress, **completed})
            outcome = self._move_placement(migration, placed.revision, target.host)
            outcome = dataclasses.replace(outcome, reason=f"{outcome.reason} in {elapsed:.1f}s")
            return self._finish(migration, outcome)
        # libvirt says it failed: see where the guest is rather than trust the error.
        if self._backend.runs_here(name) or not self._backend.runs_at(name, target):
            state: MigrationState = "Cancelled" if cancelled else "Failed"
            return self._finish(migration, Outcome(state, error, migration.source))
        outcome = self._move_placement(migration, placed.revision, target.host)
        return self._finish(migration, outcome)

    def _follow(
        self, migration: Migration, job: MigrationJob, target: MigrationTarget
    ) -> tuple[Migration, str | None, bool]:
        """Poll the job until it ends; (the latest request, the error or None, whether
        it was cancelled: for no progress, or by an operator)."""
        least: int | None = None
        last_progress = self._clock.monotonic()
        last_report = float("-inf")
        cancelled: str | None = None  # why
        while not job.done():
            self._clock.sleep(POLL)
            now = self._clock.monotonic()
            if cancelled is None:
                migration = self._migrations.migration(migration.key) or migration
                if migration.cancel:
                    log.info("%s: cancelling the migration to %s", migration.key, target.host)
                    cancelled = "cancelled by the operator"
                    job.abort()
            progress = job.progress()
            # Until QEMU has sized the job (data_total 0) nothing has moved yet.
            if progress is not None and progress.get("data_total", 0) > 0:
                remaining = progress.get("data_remaining", 0)
                if least is None or remaining < least:
                    least, last_progress = remaining, now
                if now - last_report >= REPORT_EVERY:
                    last_report = now
                    migration = self._write_progress(migration, progress)
                    self._reporter.migrating(
                        migration.key, f"to {target.host}: {describe(progress)}"
                    )
            if cancelled is None and now - last_progress >= self._stall_timeout:
                log.warning(
                    "%s: no progress for %.0fs, cancelling the migration to %s",
                    migration.key,
                    now - last_progress,
                    target.host,
                )
                cancelled = f"cancelled: no progress for {self._stall_timeout:.0f}s"
                job.abort()
        error = job.error()
        if cancelled is not None and error is not None:
            error = f"{cancelled} ({error})"
        return migration, error, cancelled is not None

    def _write_progress(self, migration: Migration, progress: Mapping[str, int]) -> Migration:
        updated = dataclasses.replace(migration, progress=dict(progress))
        if self._migrations.update(updated):
            fresh = self._migrations.migration(migration.key)
            return fresh or updated
        return self._migrations.migration(migration.key) or migration

    def _move_placement(self, migration: Migration, revision: int, target: str) -> Outcome:
        key, now = migration.key, self._clock.wall()
        reason = f"migrated from {migration.source}"
        if self._placements.place(key, target, reason, revision, now):
            return Outcome("Succeeded", f"migrated from {migration.source} to {target}", target)
        # Someone changed the placement while libvirt moved the guest: reality wins.
        log.error(
            "%s: the migration to %s finished but its placement changed meanwhile; "
            "the guest runs on %s, setting the placement to it",
            key,
            target,
            target,
        )
        placed = self._placements.placement(key)
        moved = self._placements.place(
            key, target, reason, placed.revision if placed else None, now
        )
        said = "set again" if moved else "could NOT be set: fix it by hand"
        return Outcome(
            "Succeeded",
            f"migrated to {target}, but the placement had changed meanwhile ({said})",
            target,
        )

    def _finish(self, migration: Migration, outcome: Outcome) -> Outcome:
        for _ in range(5):  # the request may have moved on (a progress write of ours)
            final = dataclasses.replace(migration, state=outcome.state, reason=outcome.reason)
            if self._migrations.update(final):
                break
            fresh = self._migrations.migration(migration.key)
            if fresh is None:
                break
            migration = fresh
        type_, reason = ending(outcome.state)
        self._reporter.ended(migration.key, type_, reason, outcome.reason)
        log.info("%s: %s: %s", migration.key, reason, outcome.reason)
        return outcome
