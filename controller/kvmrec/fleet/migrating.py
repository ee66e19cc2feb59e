"""The migrations out of one host: take the requests for its Domains, one thread each.

A pass (woken by a change under the migrations prefix, and every ``PERIOD`` seconds)
looks at every unfinished request whose Domain is placed here:

- ``restart`` (``drain --force``): stop the guest here, forget its definition and remove
  the placement, so the scheduler starts it on another host;
- ``live``, Pending: fail it at once with the reason if something blocks it (nothing is
  touched), leave it Pending with the reason while the limits are reached, else mark it
  Running (a compare on the whole prefix, see store/etcd/migrations.py) and carry it out
  (fleet/migration.py) with the Domain held out of this host's share;
- Running with no thread here (kvmrec restarted mid-migration): settle it by where the
  guest runs now.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping

from kvmrec.api.kinds import ObjectKey
from kvmrec.backends.errors import NotFound
from kvmrec.backends.protocols import LiveMigrations, MigrationTarget
from kvmrec.fleet.migration import Clock, Outcome, Reporter, Runner, ending, over_limit
from kvmrec.fleet.scope import Scope
from kvmrec.store.fleet import Hosts, Migrations, Placements, Subscription, Watching
from kvmrec.store.fleet_records import Migration, MigrationState

log = logging.getLogger(__name__)

PERIOD = 5.0


class HostMigrations:
    """Carries out the migrations of the Domains placed on ``scope.name``."""

    def __init__(
        self,
        *,
        scope: Scope,
        backend: LiveMigrations,
        hosts: Hosts,
        placements: Placements,
        migrations: Migrations,
        watching: Watching | None,
        prefix: str,
        revision: Callable[[], int],
        reporter: Reporter,
        clock: Clock,
        acting: Callable[[], bool],
        stall_timeout: float,
    ) -> None:
        self._scope = scope
        self._backend = backend
        self._hosts = hosts
        self._placements = placements
        self._migrations = migrations
        self._watching = watching
        self._prefix = prefix
        self._revision = revision
        self._reporter = reporter
        self._clock = clock
        self._acting = acting
        self.runner = Runner(
            backend=backend,
            migrations=migrations,
            placements=placements,
            reporter=reporter,
            clock=clock,
            stall_timeout=stall_timeout,
        )
        self._running: dict[ObjectKey, threading.Thread] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._subscription: Subscription | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="migrations", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._subscription is not None:
            self._subscription.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            if self._subscription is None and self._watching is not None:
                try:
                    self._subscription = self._watching.watch(
                        [self._prefix],
                        self._revision() + 1,
                        lambda _changes: self._wake.set(),
                        lambda _prefix, _revision: self._wake.set(),
                    )
                except Exception as exc:  # etcd away: the periodic pass goes on
                    log.warning("watching migrations: %s", exc)
            try:
                if self._acting():
                    self.run_once()
            except Exception as exc:  # etcd away or a lost compare: the next pass retries
                log.warning("migration pass: %s", exc)
            self._wake.wait(PERIOD)
            self._wake.clear()

    def running(self) -> list[ObjectKey]:
        with self._lock:
            return sorted(k for k, t in self._running.items() if t.is_alive())

    def run_once(self, *, threaded: bool = True) -> int:
        """One pass; returns how many migrations it started (or settled)."""
        found, seen = self._migrations.migrations()
        me = self._scope.name
        acted = 0
        for key, migration in sorted(found.items()):
            if migration.final or migration.source != me:
                continue
            if self._scope.host_of(key) != me and not self._scope.held(key):
                continue
            with self._lock:
                busy = key in self._running and self._running[key].is_alive()
            if busy:
                continue
            if migration.state == "Running":
                self._settle_interrupted(migration)
                acted += 1
            elif migration.mode == "restart":
                self._restart_elsewhere(migration)
                acted += 1
            elif self._try_start(migration, found, seen, threaded=threaded):
                return acted + 1  # the prefix changed: count the limits again next pass
        return acted

    def _target(self, migration: Migration) -> MigrationTarget | str:
        host = self._hosts.host(migration.to)
        if host is None:
            return f"target {migration.to} is not a registered host"
        if not host.ready:
            return f"target {migration.to} is not Ready"
        if host.name == migration.source:
            return f"{migration.to} is the host it runs on"
        return MigrationTarget(host.name, host.migration_uri or "", host.migration_address or None)

    def _try_start(
        self,
        migration: Migration,
        found: Mapping[ObjectKey, Migration],
        seen: int,
        *,
        threaded: bool,
    ) -> bool:
        target = self._target(migration)
        if isinstance(target, MigrationTarget) and not target.uri:
            target = f"target {migration.to} did not register a migration URI"
        if isinstance(target, str):
            self._fail(migration, target)
            return False
        blockers = self._backend.blockers(
            migration.key.name, target, copy_storage=migration.copy_storage
        )
        if blockers:
            self._fail(migration, "; ".join(blockers))
            return False
        waiting = over_limit(found, migration.source)
        if waiting is not None:
            if migration.reason != waiting:
                self._migrations.update(dataclasses.replace(migration, reason=waiting))
            return False
        if not self._migrations.start(migration, seen):
            self._wake.set()  # someone else changed a request: count again
            return False
        running = self._migrations.migration(migration.key)
        if running is None or running.state != "Running":
            return False
        self._scope.hold(migration.key)
        if threaded:
            thread = threading.Thread(
                target=self._carry_out,
                args=(running, target),
                name=f"migration-{migration.key.name}",
                daemon=True,
            )
            with self._lock:
                self._running[migration.key] = thread
            thread.start()
        else:
            self._carry_out(running, target)
        return True

    def _carry_out(self, migration: Migration, target: MigrationTarget) -> None:
        try:
            outcome = self.runner.run(migration, target)
        except Exception as exc:
            log.exception("%s: migration to %s", migration.key, target.host)
            here = self._backend.runs_here(migration.key.name)
            outcome = Outcome("Failed", str(exc), self._scope.name if here else "")
        finally:
            self._wake.set()
        self._after(migration.key, outcome.runs_on)

    def _after(self, key: ObjectKey, runs_on: str) -> None:
        """Give the Domain back to the host it runs on, as its placement now says."""
        placed = self._placements.placement(key)
        host = placed.placement.host if placed is not None else None
        self._scope.set_placement(key, host)
        if runs_on and runs_on != self._scope.name and host == self._scope.name:
            # libvirt moved it but the placement still says here: never start it again.
            log.error(
                "%s runs on %s but is still placed on %s: held out of this host's share",
                key,
                runs_on,
                self._scope.name,
            )
            return
        self._scope.release(key)

    def _settle_interrupted(self, migration: Migration) -> None:
        target = self._target(migration)
        name = migration.key.name
        away = isinstance(target, MigrationTarget) and not self._backend.runs_here(name)
        if (
            isinstance(target, MigrationTarget)
            and away
            and target.uri
            and self._backend.runs_at(name, target)
        ):
            placed = self._placements.placement(migration.key)
            revision = placed.revision if placed else None
            self._placements.place(
                migration.key,
                target.host,
                "migrated (settled after a restart)",
                revision,
                self._clock.wall(),
            )
            self._end(migration, "Succeeded", f"found running on {target.host}")
            self._after(migration.key, target.host)
            return
        if migration.cancel:  # the operator's cancel stands: the guest stayed
            reason = "cancelled by the operator (kvmrec on the source restarted meanwhile)"
            self._end(migration, "Cancelled", reason)
            return
        self._end(migration, "Failed", "interrupted: kvmrec on the source restarted")

    def _restart_elsewhere(self, migration: Migration) -> None:
        key = migration.key
        placed = self._placements.placement(key)
        if placed is None or placed.placement.host != self._scope.name:
            return
        self._scope.hold(key)
        try:
            self._backend.evict(key.name)
        except NotFound:
            pass  # not defined here: nothing to stop
        except Exception as exc:
            self._scope.release(key)
            self._fail(migration, f"could not stop it here: {exc}")
            return
        if self._placements.unplace(key, placed.revision):
            self._scope.set_placement(key, None)
        self._scope.release(key)
        self._finish(migration, "Succeeded", f"stopped on {self._scope.name} to start elsewhere")
        self._reporter.ended(
            key, "Warning", "Evicted", f"stopped on {self._scope.name}; the scheduler places it"
        )

    def _fail(self, migration: Migration, reason: str) -> None:
        self._end(migration, "Failed", reason)

    def _end(self, migration: Migration, state: MigrationState, reason: str) -> None:
        """Record the request's end and say it with the event ``Runner`` would have."""
        self._finish(migration, state, reason)
        self._reporter.ended(migration.key, *ending(state), reason)

    def _finish(self, migration: Migration, state: MigrationState, reason: str) -> None:
        final = dataclasses.replace(migration, state=state, reason=reason)
        if not self._migrations.update(final):
            self._wake.set()
