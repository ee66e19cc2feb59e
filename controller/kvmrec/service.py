"""The service: sources, store, engine and backends wired together.

    manifest directory --(watchdog, debounce, rescan)--> ManifestSync --> store
                                                              |
    libvirt lifecycle events ---------------------------+     | changed keys
    periodic resync (only keys whose domain moved) -----+--> WorkQueue --> Workers
    libvirt reconnect (relist everything) --------------+        |
                                                                 v
                                   reconcilers, one per kind --> libvirt, OVSDB
                                   (reconcilers/registry.py: who wakes whom)

A worker takes the ready keys in a batch when reconciles are short (engine/workers.py);
the batch's reconciles run interleaved stage by stage and their final writes are stored in
one transaction, before anything that depends on them is woken.

``Service.start`` brings everything up and queues every stored key once (the desired state
survives restarts in the store, so a service killed mid-converge finishes the work);
``stop`` drains in-flight reconciles within the settings' budget. ``converge`` is the
``run --once`` mode: one pass, waiting until every object settles (``settling.py``) or the
timeout passes.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from kvmrec import gc_thresholds, hosting, malloc_arenas, settling
from kvmrec.api.kinds import ObjectKey
from kvmrec.backends.errors import Unavailable
from kvmrec.backends.libvirt.guest_agent import GuestAgent
from kvmrec.backends.libvirt.hypervisor import Hypervisor
from kvmrec.backends.ovs.client import Ovsdb
from kvmrec.dispatch import Dispatch
from kvmrec.engine import backoff as backoffs
from kvmrec.engine import clock as clocks
from kvmrec.engine import queue as queues
from kvmrec.engine import workers as engine
from kvmrec.engine.resync import Resync
from kvmrec.metrics import Endpoint, Metrics
from kvmrec.reconcilers import registry
from kvmrec.resync_keys import ResyncKeys
from kvmrec.settings import Settings
from kvmrec.sources import git, trust
from kvmrec.sources.directory import DirectorySource
from kvmrec.sources.manifests import ManifestSync, of_directory
from kvmrec.sources.scanning import Snapshot, scan

log = logging.getLogger(__name__)


class _Observer:
    """Tells the metrics about every reconcile; the workers log the failures, and
    ``recording.one_write`` records each reconcile for ``kvmrec history``."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def on_success(self, key: ObjectKey, result: engine.Result, duration: float) -> None:
        log.debug("%s: reconciled in %.3fs", key, duration)
        self._metrics.observe(key.kind, "ok", duration)

    def on_error(
        self, key: ObjectKey, exc: Exception, retries: int, permanent: bool, delay: float | None
    ) -> None:
        self._metrics.observe(key.kind, "permanent" if permanent else "error", None)


class Service:
    """One kvmrec controller on one host."""

    def __init__(self, settings: Settings, *, clock: clocks.Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or clocks.SystemClock()
        self.store, fleet = hosting.open_store(settings)
        self.metrics = Metrics()
        self.endpoint: Endpoint | None = None
        self._loaded = threading.Event()  # the manifests were read once: ready to serve
        self.queue: queues.WorkQueue[ObjectKey] = queues.WorkQueue(
            clock=self.clock, backoff=backoffs.Backoff(settings.backoff)
        )
        self.hypervisor = Hypervisor(
            settings.connect,
            on_domain_event=self._domain_event,
            on_network_event=self._network_event,
            on_reconnect=self._relist,
            # Each reconcile then finds libvirt unavailable and says so in Ready=Unknown.
            on_disconnect=lambda _why: self._relist(),
        )
        self.guest = GuestAgent(self.hypervisor)
        self.ovsdb = Ovsdb(
            settings.ovsdb,
            on_bridge_event=self._bridge_event,
            on_reconnect=self._relist_bridges,
            # Each reconcile then finds OVSDB unavailable and says so in Ready=Unknown.
            on_disconnect=lambda _why: self._relist_bridges(),
        )
        self.hypervisor.shared = tuple(str(p) for p in settings.shared_storage)
        self.membership = hosting.member(
            settings, fleet, self.store, self.hypervisor, self.clock, self.queue.add, self._relist
        )
        self.dispatch = Dispatch(self.store, self.clock, self.queue, self.membership)
        self.kinds = registry.build(
            self.store,
            self.clock,
            self.hypervisor,
            self.ovsdb,
            disk_roots=settings.disk_roots,
            allow_device_disks=settings.allow_device_disks,
            guest=self.guest,
            stop_grace=settings.stop_grace_period,
            on_done=self.dispatch.note,
            scope=None if self.membership is None else self.membership.mine,
        )
        self.dispatch.kinds = self.kinds
        self.workers = engine.Workers(
            self.queue,
            self.dispatch.reconcile,
            count=settings.workers,
            observer=_Observer(self.metrics),
            reconcile_many=self.dispatch.reconcile_many,
        )
        self.sync = ManifestSync(
            self.store, self.clock, allow_mass_delete=settings.allow_mass_delete
        )
        self._keys_lock = threading.Lock()
        self._keys: set[ObjectKey] = set()
        self._sync_lock = threading.Lock()
        self.resync_keys = ResyncKeys(
            settings,
            self.store,
            self.kinds,
            self.clock,
            self.metrics,
            keys=lambda: self._share(self._all_keys()),
        )
        self.resync = Resync(self.queue, self.resync_keys, period=settings.resync)
        self.source: DirectorySource | None = None

    # -- wiring --------------------------------------------------------------------------

    def _event(self, source: str, name: str) -> None:
        # Called on a backend's event thread: enqueue and return, nothing else.
        routed = self.kinds.event_key(source, name)
        if routed is None:
            return
        key, unmanaged_too = routed
        if not unmanaged_too:
            with self._keys_lock:
                if key not in self._keys:
                    return
        self.queue.add(key)

    def _domain_event(self, name: str) -> None:
        self._event("domain", name)

    def _network_event(self, name: str) -> None:
        self._event("network", name)

    def _bridge_event(self, name: str) -> None:
        self._event("bridge", name)

    def _relist_bridges(self) -> None:
        """OVS restarted or its database was recreated: look at its objects again."""
        kinds = self.kinds.relisted_by("ovsdb")
        for key in self._all_keys():
            if key.kind in kinds:
                self.queue.add(key)

    def _relist(self) -> None:
        """After a reconnect: events were lost while libvirt was away, so look at everything."""
        for key in self._share(self._all_keys()):
            self.queue.add(key)

    def _share(self, keys: list[ObjectKey]) -> list[ObjectKey]:
        # A fleet host leaves the Domains placed elsewhere alone: not read, not recorded.
        return keys if self.membership is None else self.membership.share(keys)

    def _all_keys(self) -> list[ObjectKey]:
        keys = list(self.store.keys())
        with self._keys_lock:
            self._keys = set(keys)
        return keys

    def vet(self, snapshot: Snapshot) -> Snapshot:
        """StrictModes (sources/trust.py), unless the settings say the manifests are trusted.

        A file that held objects and is gone from a directory someone else can write is
        held too: that someone may have removed it."""
        if self.settings.insecure_manifests:
            return snapshot
        expected = {obj.source for obj in self.store.list() if of_directory(obj)}
        return trust.enforce(snapshot, self.settings.manifests, expected=expected)

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Store what a snapshot of the manifest directory says and queue what changed."""
        with self._sync_lock:
            result = self.sync.apply(snapshot, git.commits_of(self.settings.manifests))
        with self._keys_lock:
            self._keys.update(result.changed)
        for key in [*result.changed, *result.deleting]:
            self.queue.add(key)
        if result.changed or result.deleting:
            log.info(
                "manifests: %d changed, %d to delete, %d files in error",
                len(result.changed),
                len(result.deleting),
                len(result.errors),
            )

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, *, watch: bool = True) -> None:
        """Connect, queue every stored key, load the manifests, and start working."""
        malloc_arenas.limit()  # before this service's threads exist
        gc_thresholds.raise_thresholds()
        try:
            self.hypervisor.open()
        except Unavailable as exc:
            if not watch:
                raise
            log.error("%s; will keep retrying", exc)
            self.hypervisor.start_reconnecting()
        try:
            self.ovsdb.open()
        except Unavailable as exc:
            # Not fatal: only OvsBridge objects need it, and they say so in their status.
            log.warning("%s; will keep retrying", exc)
            self.ovsdb.start_reconnecting()
        for key in self._share(self._all_keys()):
            self.queue.add(key)
        if self.membership is not None:
            self.membership.start()  # the fleet's store feeds the queue, not a directory
        elif watch:
            self.source = DirectorySource(
                self.settings.manifests,
                self.apply_snapshot,
                debounce=self.settings.debounce,
                rescan_interval=self.settings.rescan,
                vet=self.vet,
            )
            self.source.start()
        elif self.membership is None:
            self.apply_snapshot(self.vet(scan(self.settings.manifests)))
        self._loaded.set()
        self.workers.start()
        if watch:
            self.resync.start()
        if self.settings.metrics_listen:
            self._serve_metrics(self.settings.metrics_listen)

    def _serve_metrics(self, listen: str) -> None:
        def drifted() -> float:
            return float(sum(1 for s in self.store.statuses().values() if s.drift))

        self.metrics.bind(
            queue_depth=lambda: float(len(self.queue)),
            drifted=drifted,
            backends={
                "libvirt": lambda: self.hypervisor.connected,
                "ovsdb": lambda: self.ovsdb.connected,
            },
        )
        self.endpoint = Endpoint(
            listen,
            self.metrics,
            healthy=self.workers.alive,
            ready=lambda: self._loaded.is_set() and self.hypervisor.connected,
        )
        self.endpoint.start()
        log.info("metrics and health on %s", self.endpoint.address)

    def stop(self) -> bool:
        """Stop taking work, let in-flight reconciles finish, close everything.

        Returns whether the drain finished in time."""
        if self.source is not None:
            self.source.stop()
        if self.membership is not None:
            self.membership.stop()
        self.resync.stop(timeout=1.0)
        if self.endpoint is not None:
            self.endpoint.stop()
        drained = self.workers.stop(timeout=self.settings.drain_timeout)
        self.hypervisor.close()
        self.ovsdb.close()
        self.store.close()
        return drained

    def settled(self) -> bool:
        """Every object converged, or nothing left to try until an input changes."""
        return settling.settled(self.queue, self.store)

    def converged_count(self) -> tuple[int, int]:
        """(objects synced and ready at their generation, all objects)."""
        return settling.converged_count(self.store)

    def converge(self, timeout: float, progress: Callable[[int, int], None] | None = None) -> bool:
        """``run --once``: until everything settles or ``timeout`` seconds pass;
        ``progress(done, total)`` is told about twice a second."""
        deadline = time.monotonic() + timeout
        next_tick = 0.0
        while time.monotonic() < deadline:
            if self.settled():
                return True
            if progress is not None and time.monotonic() >= next_tick:
                progress(*self.converged_count())
                next_tick = time.monotonic() + 0.5
            if self.queue.is_busy():
                self.queue.wait_idle(0.05)  # look again as soon as the work is done
            else:
                time.sleep(0.05)  # waiting for retries
        return False

    # -- running as a daemon (kvmrec/daemon.py) ------------------------------------------

    def reload(self, settings: Settings) -> Settings:
        """Take from ``settings`` what can change while running, and rescan the manifests.

        Only the resync period changes live; everything else is wired into threads,
        connections and files opened at start. Returns the settings now in force, so the
        caller can tell the operator which of the requested changes need a restart."""
        if settings.resync != self.settings.resync:
            self.resync.set_period(settings.resync)
        self.settings = dataclasses.replace(self.settings, resync=settings.resync)
        if self.source is not None:
            # inotify drops events when its queue overflows, and NFS sends none: a reload
            # is the operator's way of saying "look again now".
            self.source.rescan()
        return self.settings

    def problems(self) -> list[str]:
        """Why the engine cannot be trusted to make progress; empty when it can.

        The systemd watchdog is petted only while this is empty: a worker thread that died
        or a reconcile stuck past ``stuck_after`` is cured by a restart, and nothing else
        would cure it. Slow is not stuck: long reconciles finish well within the bound."""
        found = [] if self.workers.alive() else ["a worker thread has died"]
        for key, seconds in self.workers.stuck(self.settings.stuck_after):
            found.append(f"{key} has been reconciling for {seconds:.0f}s")
        return found
