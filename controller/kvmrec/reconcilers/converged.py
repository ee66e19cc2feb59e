"""Fast resync: the fingerprints of the domains last found converged.

After a reconcile that found nothing to do, a domain's fingerprint (its definition, its
live XML, paused and autostart) is remembered; a periodic resync reconciles only the
domains whose fingerprint moved since. Workers of several keys remember at once: a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from kvmrec.api.kinds import ObjectKey
from kvmrec.backends.libvirt.live import Fingerprint


class Converged:
    """Which domains were last found converged, and with which fingerprint."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fingerprints: dict[str, Fingerprint] = {}

    def stale(
        self, keys: Iterable[ObjectKey], fingerprints: Mapping[str, Fingerprint]
    ) -> list[ObjectKey]:
        """The keys whose domains changed since they were last found converged."""
        with self._lock:
            converged = dict(self._fingerprints)
        return [
            key
            for key in keys
            if key.name not in converged or fingerprints.get(key.name) != converged[key.name]
        ]

    def remember(self, name: str, fingerprint: Fingerprint | None) -> None:
        with self._lock:
            if fingerprint is None:
                self._fingerprints.pop(name, None)
            else:
                self._fingerprints[name] = fingerprint
