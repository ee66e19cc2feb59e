"""HA recovery: the HA guests of a dead host are started on another host, never twice.

A host's agent renews its lease every 5 s (TTL 15 s) and counts, on its own monotonic
clock, from the moment it *sent* its last successful renewal: at TTL - margin = 10 s after
that it knows the lease lost and destroys its running HA guests at once (fleet/fencing.py).
etcd restarted the TTL no earlier than it received that renewal, so it expires the lease
at the earliest 15 s after the send: the self-fence starts at least margin = 5 s before
the expiry. The scheduler sees the expiry (the host's live key gone) only after it
happened, and waits ``fencing_window`` seconds more from the moment it first saw it:

    renewal sent  t0
    self-fence    t0 + 10        (destroy every running HA guest, a second sweep 3 s on)
    lease expiry  >= t0 + 15     (etcd; the scheduler sees it a little later)
    relocation    >= t0 + 15 + fencing_window   (default 5 s: >= 10 s to destroy)

So a cut-off host has had at least margin + window (10 s by default) to destroy its HA
guests, and a dead one runs nothing. The wait is counted from what this scheduler saw: a
new scheduler starts counting afresh, which only delays. A host that fails to fence (its
kvmrec frozen, its libvirt hung) is what libvirt's lock manager is for: the disk's lease
refuses the second QEMU.

Relocation decisions, made here without I/O so the scheduler's pass can act on them:

- an HA Domain placed on a host that is not Ready, whose window has passed, gets a new
  host from the scheduler's own filters (fleet/scheduling.py: Ready, not cordoned, fits,
  shares the disks); one compare-and-swap moves the placement (the old revision compared);
- an HA Domain whose start failed more than ``maxRestarts`` times on a Ready host, where
  it never ran, is moved on the same way;
- each move counts in the Domain's fleet-level status (``details.relocations``); once
  ``maxRelocations`` are spent the Domain gets ``HAFailed`` and is left alone;
- non-HA Domains of a dead host stay where they are (``HostNotReady`` only), and so does
  everything on a host whose kvmrec was stopped on purpose (``stopped``: its guests run
  on without it; its lease's end is no death).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from kvmrec.api.kinds import ObjectKey
from kvmrec.fleet import scheduling
from kvmrec.fleet.scheduling import Domain, Overcommit
from kvmrec.store.fleet_records import HostRecord, Placement
from kvmrec.store.records import Status, StoredObject

RELOCATIONS = "relocations"  # the count in the fleet-level status's details


@dataclass(frozen=True)
class Relocate:
    """Move ``key`` from ``source`` to ``target``; its ``count``-th relocation."""

    key: ObjectKey
    source: str
    target: str
    why: str
    reason: str  # the scheduler's reason for the target
    count: int


@dataclass(frozen=True)
class NoTarget:
    """``key`` must move from ``source`` but no host takes it (``message`` says why)."""

    key: ObjectKey
    source: str
    message: str


@dataclass(frozen=True)
class Exhausted:
    """``key`` must move from ``source`` but its ``maxRelocations`` are spent."""

    key: ObjectKey
    source: str
    message: str


Action = Relocate | NoTarget | Exhausted


class FencingWindows:
    """When each host was first seen not Ready, on a monotonic clock."""

    def __init__(self, window: float, clock: Callable[[], float]) -> None:
        self.window = window
        self._clock = clock
        self._away_since: dict[str, float] = {}

    def observe(self, hosts: Iterable[HostRecord]) -> list[str]:
        """Note which hosts are away; returns those newly seen away."""
        now, new = self._clock(), []
        for host in hosts:
            if host.ready:
                self._away_since.pop(host.name, None)
            elif host.name not in self._away_since:
                self._away_since[host.name] = now
                new.append(host.name)
        return new

    def fenced(self, name: str) -> bool:
        """Whether host ``name`` has been away the whole window (so has fenced itself)."""
        since = self._away_since.get(name)
        return since is not None and self._clock() - since >= self.window


def relocations(status: Status | None) -> int:
    count = status.details.get(RELOCATIONS, 0) if status is not None else 0
    return count if isinstance(count, int) else 0


def decide(
    hosts: Sequence[HostRecord],
    domains: Sequence[Domain],
    placements: Mapping[ObjectKey, Placement],
    host_level: Iterable[StoredObject],
    statuses: Mapping[ObjectKey, Mapping[str | None, Status]],
    windows: FencingWindows,
    *,
    overcommit: Overcommit = scheduling.DEFAULT_OVERCOMMIT,
) -> list[Action]:
    """What to do for each HA Domain that must leave its host; ``statuses`` are every
    host's status of each object (None: the fleet's own)."""
    ready = {h.name for h in hosts if h.ready}
    stopped = {h.name for h in hosts if h.stopped}
    leaving: dict[ObjectKey, str] = {}  # key -> why it leaves
    for obj, spec in domains:
        ha, placed = spec.high_availability, placements.get(obj.key)
        if ha is None or placed is None or obj.deleting:
            continue
        fleet = statuses.get(obj.key, {}).get(None)
        if _gave_up(fleet):
            continue
        if placed.host not in ready:
            if placed.host not in stopped and windows.fenced(placed.host):
                leaving[obj.key] = f"host {placed.host} is dead (lease expired, fenced)"
        else:
            failed = _failed_starts(statuses.get(obj.key, {}).get(placed.host))
            if failed > ha.max_restarts:
                leaving[obj.key] = f"failed to start {failed} times on {placed.host}"
    if not leaving:
        return []
    # Every other placement counts against its host; the leaving Domains are placed anew.
    staying = {k: p for k, p in placements.items() if k not in leaving}
    actions: list[Action] = []
    by_key = {obj.key: spec for obj, spec in domains}
    for key, why in sorted(leaving.items()):
        source = placements[key].host
        spec = by_key[key]
        assert spec.high_availability is not None
        done = relocations(statuses.get(key, {}).get(None))
        if done >= spec.high_availability.max_relocations:
            message = (
                f"{why}; not relocated: maxRelocations ({spec.high_availability.max_relocations})"
                " spent"
            )
            actions.append(Exhausted(key, source, message))
            continue
        # The host it leaves is no candidate (a host it fails on would be chosen again).
        others = [h for h in hosts if h.name != source]
        decision = scheduling.schedule(
            others,
            [d for d in domains if d[0].key == key or d[0].key in staying],
            staying,
            host_level,
            overcommit=overcommit,
        ).get(key)
        if isinstance(decision, scheduling.Scheduled):
            actions.append(Relocate(key, source, decision.host, why, decision.reason, done + 1))
            staying[key] = decision.placement(placements[key].time)
        elif decision is not None:
            actions.append(NoTarget(key, source, f"{why}; {decision.message}"))
    return actions


def _gave_up(status: Status | None) -> bool:
    ready = status.condition("Ready") if status is not None else None
    return ready is not None and ready.reason == "HAFailed"


def _failed_starts(status: Status | None) -> int:
    """Failed reconciles of a Domain that never ran on the host (0 once it has)."""
    if status is None or status.is_true("Ready"):
        return 0
    if status.details.get("state") in ("running", "paused"):
        return 0
    synced = status.condition("Synced")
    return status.retries if synced is not None and synced.reason == "ReconcileFailed" else 0
