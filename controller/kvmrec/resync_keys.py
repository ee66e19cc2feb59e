"""Which keys a periodic resync queues, and the housekeeping it does on the way.

Most passes queue only the keys whose kind says they may have moved (``Kinds.stale``:
the fingerprints of what libvirt reports), so a quiet host reads rather than reconciles.
Every ``full_resync_every``-th pass (hourly at the defaults) queues every key, catching
what no fingerprint or event shows; once in each such cycle, starting with the first pass,
history older than ``history_days`` is forgotten. The passes between write nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from kvmrec.api.objects import ObjectKey
from kvmrec.backends.errors import Unavailable
from kvmrec.engine.clock import Clock
from kvmrec.metrics import Metrics
from kvmrec.reconcilers.registry import Kinds
from kvmrec.settings import Settings
from kvmrec.store.base import Store, StoreError

log = logging.getLogger(__name__)


class ResyncKeys:
    """Called by the engine's Resync on each pass: the keys to queue. ``keys`` gives every
    key this host works on."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        kinds: Kinds,
        clock: Clock,
        metrics: Metrics,
        keys: Callable[[], list[ObjectKey]],
    ) -> None:
        self._settings = settings
        self._store = store
        self._kinds = kinds
        self._clock = clock
        self._metrics = metrics
        self._keys = keys
        self.passes = 0  # how many passes ran: which of them are full

    def __call__(self) -> list[ObjectKey]:
        keys = self._keys()
        if self.passes % self._settings.full_resync_every == 0:
            before = self._clock.wall() - timedelta(days=self._settings.history_days)
            try:
                self._store.prune_history(before)
            except StoreError as exc:
                log.error("pruning history: %s", exc)
        self._metrics.last_resync.set(self._clock.wall().timestamp())
        self.passes += 1
        if self.passes % self._settings.full_resync_every == 0:
            return keys  # a full pass: what no fingerprint or event shows is caught here
        try:
            return self._kinds.stale(keys)
        except Unavailable:
            return keys  # the reconciles report the outage in each object's status
