"""Which of the fleet's objects one host reconciles.

A host sees the whole desired state but acts only on its share: the Domains placed on it,
the Snapshots of those Domains, and the host-level objects (Network, OvsBridge,
SnapshotPolicy) whose ``hostSelector`` picks it. Placements change under the host's feet
(the scheduler places, a migration moves), so the scope keeps the latest it was told and
answers from memory: asking costs no store read. A Domain that is migrating is held out
of the share until its placement says where it runs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from kvmrec.api.kinds import ObjectKey, host_selector
from kvmrec.fleet.selectors import HOST_LEVEL_KINDS, mismatches
from kvmrec.store.records import StoredObject


class Scope:
    """The share of one host, ``name`` with ``labels``."""

    def __init__(self, name: str, labels: Mapping[str, str]) -> None:
        self.name = name
        self.labels = dict(labels)
        self._lock = threading.Lock()
        self._placed: dict[ObjectKey, str] = {}
        self._held: set[ObjectKey] = set()

    def replace_placements(self, placed: Mapping[ObjectKey, str]) -> None:
        """Everything placed, as a fresh list says (after a relist)."""
        with self._lock:
            self._placed = dict(placed)

    def set_placement(self, key: ObjectKey, host: str | None) -> str | None:
        """One placement changed (None: removed); returns the host it had before."""
        with self._lock:
            before = self._placed.get(key)
            if host is None:
                self._placed.pop(key, None)
            else:
                self._placed[key] = host
            return before

    def hold(self, key: ObjectKey) -> None:
        """Keep Domain ``key`` out of this host's share while it migrates: neither the
        guest leaving (libvirt undefines it here) nor one that arrived is reconciled."""
        with self._lock:
            self._held.add(key)

    def release(self, key: ObjectKey) -> None:
        with self._lock:
            self._held.discard(key)

    def held(self, key: ObjectKey) -> bool:
        with self._lock:
            return key in self._held

    def host_of(self, key: ObjectKey) -> str | None:
        with self._lock:
            return self._placed.get(key)

    def placed_here_now(self, key: ObjectKey) -> bool:
        return self.host_of(key) == self.name

    def _ours(self, key: ObjectKey) -> bool:
        with self._lock:
            return key not in self._held and self._placed.get(key) == self.name

    def placed_here(self) -> list[ObjectKey]:
        with self._lock:
            return sorted(k for k, host in self._placed.items() if host == self.name)

    def mine(self, obj: StoredObject) -> bool:
        """Whether this host reconciles ``obj``."""
        kind = obj.key.kind
        if kind == "Domain":
            return self._ours(obj.key)
        if kind == "Snapshot":
            domain = obj.spec.get("domain")
            return isinstance(domain, str) and self._ours(ObjectKey("Domain", domain))
        if kind in HOST_LEVEL_KINDS:
            return not mismatches(self.labels, host_selector(obj.spec))
        return False

    def mine_of(self, objects: Iterable[StoredObject]) -> list[ObjectKey]:
        return [obj.key for obj in objects if self.mine(obj)]
