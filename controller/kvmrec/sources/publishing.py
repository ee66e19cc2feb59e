"""The manifest directory kept in a store, with nothing reconciled (``kvmrec publish``).

The directory workflow of a fleet: on a management host, the same watch (sources/
directory.py: inotify, debounce, rescan), the same trust (sources/trust.py) and the same
ManifestSync (sources/manifests.py) as ``kvmrec run`` writes the desired state into the
store the hypervisors read. So a file that breaks keeps its objects at their last good
spec and is recorded as a source error, and an emptied directory is held back by the
mass-delete guard until ``kvmrec prune`` approves it, exactly as on a single host.
"""

from __future__ import annotations

import logging
import threading

from kvmrec.engine.clock import Clock, SystemClock
from kvmrec.settings import Settings
from kvmrec.sources import git, trust
from kvmrec.sources.directory import DirectorySource
from kvmrec.sources.manifests import ManifestSync, SyncResult, of_directory
from kvmrec.sources.scanning import Snapshot, scan
from kvmrec.store.base import Store

log = logging.getLogger(__name__)


class Publisher:
    """Writes every snapshot of ``settings.manifests`` into ``store``."""

    def __init__(self, settings: Settings, store: Store, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.store = store
        self.sync = ManifestSync(
            store, clock or SystemClock(), allow_mass_delete=settings.allow_mass_delete
        )
        self._lock = threading.Lock()
        self.source: DirectorySource | None = None

    def vet(self, snapshot: Snapshot) -> Snapshot:
        """StrictModes, as the service applies them (a file that held objects and is gone
        from a directory others can write is held too)."""
        if self.settings.insecure_manifests:
            return snapshot
        expected = {obj.source for obj in self.store.list() if of_directory(obj)}
        return trust.enforce(snapshot, self.settings.manifests, expected=expected)

    def publish(self, snapshot: Snapshot) -> SyncResult:
        with self._lock:
            result = self.sync.apply(snapshot, git.commits_of(self.settings.manifests))
        if result.changed or result.deleting:
            log.info(
                "published: %d changed, %d to delete, %d files in error",
                len(result.changed),
                len(result.deleting),
                len(result.errors),
            )
        return result

    def _published(self, snapshot: Snapshot) -> None:
        self.publish(snapshot)

    def once(self) -> SyncResult:
        """One scan, published."""
        return self.publish(self.vet(scan(self.settings.manifests)))

    def start(self) -> None:
        """Publish the directory now, then whenever it changes (from a thread of its own)."""
        self.source = DirectorySource(
            self.settings.manifests,
            self._published,
            debounce=self.settings.debounce,
            rescan_interval=self.settings.rescan,
            vet=self.vet,
        )
        self.source.start()

    def rescan(self) -> None:
        if self.source is not None:
            self.source.rescan()

    def stop(self) -> None:
        if self.source is not None:
            self.source.stop()
