"""The fleet's one scheduler: whichever host holds the election places, marks and collects.

Every host campaigns (store/etcd/election.py); the leader, and only while it leads:

- places each unplaced Domain (fleet/scheduling.py decides; each decision is a
  compare-and-swap, a pass's written together where none lost its race, and a
  ``Scheduled`` event says where and why) or records why it cannot
  (``Unschedulable`` in the Domain's fleet-level status, naming every host);
- marks the status of every object on a host whose lease has expired ``HostNotReady``,
  without touching its guests (the host may only be cut off);
- relocates the HA Domains of a host that is dead past its fencing window
  (fleet/relocation.py);
- forgets a deleted Domain that no host holds, and a deleted host-level object once every
  host has cleaned up after it.

A pass runs when something it looks at changes (a watch wakes it) and every ``period``
seconds regardless; every ``RETRY`` seconds while a Domain waits on a host that has
stopped renewing its lease (nothing in etcd changes when that host renews again or its key
goes). A pass that finds nothing to change writes nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from kvmrec.api.kinds import ObjectKey
from kvmrec.fleet import scheduling
from kvmrec.fleet.relocation import Relocator
from kvmrec.fleet.selectors import HOST_LEVEL_KINDS
from kvmrec.store.fleet import (
    Election,
    FleetStatuses,
    Hosts,
    Placements,
    Placing,
    Subscription,
    Watching,
)
from kvmrec.store.fleet_records import HostRecord, Placement
from kvmrec.store.records import Status, StoredObject

log = logging.getLogger(__name__)

PERIOD = 30.0  # seconds between passes when nothing wakes the leader
RETRY = 2.0  # seconds before a pass that failed is tried again
DEBOUNCE = 0.2  # a burst of changes (an apply of many manifests) makes one pass
LEADERSHIP_CHECK = 32  # placements written between two looks at the election


@dataclass
class PassResult:
    placed: int = 0
    unschedulable: int = 0
    marked: int = 0
    collected: int = 0
    relocated: int = 0
    # A Domain is left unplaced while some host is silent: a renewal (no etcd change, so
    # no watch event) may make that host a candidate again within seconds.
    recheck: bool = False


class Leader:
    """Runs passes while ``election`` says this host leads."""

    def __init__(
        self,
        *,
        election: Election,
        store: FleetStatuses,
        hosts: Hosts,
        placements: Placements,
        watching: Watching,
        prefixes: Sequence[str],
        revision: Callable[[], int],
        now: Callable[[], datetime],
        overcommit: scheduling.Overcommit = scheduling.DEFAULT_OVERCOMMIT,
        period: float = PERIOD,
        relocator: Relocator | None = None,
    ) -> None:
        """``relocator``: restarts the HA Domains of dead hosts elsewhere (None: none is)."""
        self._election = election
        self._store = store
        self._hosts = hosts
        self._placements = placements
        self._watching = watching
        self._prefixes = list(prefixes)
        self._revision = revision
        self._now = now
        self._overcommit = overcommit
        self._period = period
        self._relocator = relocator
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._subscription: Subscription | None = None
        self._recheck = False

    def start(self) -> None:
        self._election.start()
        self._thread = threading.Thread(target=self._run, name="fleet-leader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._unsubscribe()
        self._election.stop()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            if not self._election.is_leader():
                self._unsubscribe()
                self._stopping.wait(1.0)
                continue
            try:
                self._subscribe()
                self._recheck = self.run_once().recheck
            except Exception as exc:  # etcd away or a lost compare: the next pass retries
                log.warning("scheduler pass: %s", exc)
                self._stopping.wait(RETRY)  # etcd is usually back within seconds
                continue
            self._wake.wait(RETRY if self._recheck else self._period)
            self._wake.clear()
            self._stopping.wait(DEBOUNCE)

    def _subscribe(self) -> None:
        if self._subscription is None:
            self._subscription = self._watching.watch(
                self._prefixes,
                self._revision() + 1,
                lambda _changes: self._wake.set(),
                lambda _prefix, _revision: self._wake.set(),
            )

    def _unsubscribe(self) -> None:
        if self._subscription is not None:
            self._subscription.stop()
            self._subscription = None

    # -- one pass ------------------------------------------------------------------------

    def run_once(self) -> PassResult:
        now = self._now()
        result = PassResult()
        hosts = list(self._hosts.hosts())
        objects = list(self._store.list())
        placed = self._placements.placements("Domain")
        placements = {key: p.placement for key, p in placed.items()}
        statuses = _by_key(self._store.host_statuses())
        domains = scheduling.parsed(o for o in objects if o.key.kind == "Domain")
        host_level = [o for o in objects if o.key.kind in HOST_LEVEL_KINDS]
        decisions = scheduling.schedule(
            hosts, domains, placements, host_level, overcommit=self._overcommit
        )
        generations = {o.key: o.generation for o in objects}
        result.recheck = any(scheduling.silent(h) for h in hosts) and any(
            isinstance(d, scheduling.Unschedulable) for d in decisions.values()
        )
        placings = [
            Placing(
                key, d.host, d.reason, ("Normal", "Scheduled", f"placed on {d.host}: {d.reason}")
            )
            for key, d in sorted(decisions.items())
            if isinstance(d, scheduling.Scheduled)
        ]
        for start in range(0, len(placings), LEADERSHIP_CHECK):
            if not self._election.is_leader():
                return result
            for key in self._placements.place_new(placings[start : start + LEADERSHIP_CHECK], now):
                result.placed += 1
                if statuses.get(key, {}).get(None) is not None:
                    self._store.forget_status(key, None)
        for key, decision in sorted(decisions.items()):
            if not self._election.is_leader():
                return result
            fleet_status = statuses.get(key, {}).get(None)
            if isinstance(decision, scheduling.Unschedulable):
                if _says(fleet_status, "Unschedulable", decision.message):
                    continue
                status = _unschedulable(fleet_status, generations[key], decision.message, now)
                event = ("Warning", "Unschedulable", decision.message)
                self._store.record_for(None, key, status, [event], now)
                result.unschedulable += 1
        result.marked = self._mark_not_ready(hosts, statuses, placements, now)
        if self._relocator is not None and self._election.is_leader():
            result.relocated = self._relocator.run_once(hosts, domains, host_level, statuses, now)
        result.collected = self._collect(objects, placements, statuses)
        return result

    def _mark_not_ready(
        self,
        hosts: Sequence[HostRecord],
        statuses: Mapping[ObjectKey, Mapping[str | None, Status]],
        placements: Mapping[ObjectKey, Placement],
        now: datetime,
    ) -> int:
        """Marks what each expired host reported, and each Domain placed there that it
        died before reporting (its status would otherwise say nothing of the host)."""
        away = {h.name: h for h in hosts if not h.ready}
        marks: dict[tuple[ObjectKey, str], Status] = {
            (key, host): status
            for key, by_host in statuses.items()
            for host, status in by_host.items()
            if host is not None and host in away
        }
        for key, placement in placements.items():
            if placement.host in away:
                marks.setdefault((key, placement.host), Status())
        marked = 0
        for (key, host), status in sorted(marks.items()):
            ready = status.condition("Ready")
            if ready is not None and ready.reason == "HostNotReady":
                continue
            since = away[host].last_heartbeat
            message = f"host {host} is not Ready: its lease has expired" + (
                f" (last heartbeat {since.isoformat(timespec='seconds')})" if since else ""
            )
            new = status.with_condition("Ready", "Unknown", "HostNotReady", message, now)
            self._store.record_for(host, key, new, [("Warning", "HostNotReady", message)], now)
            marked += 1
        return marked

    def _collect(
        self,
        objects: Sequence[StoredObject],
        placements: Mapping[ObjectKey, Placement],
        statuses: Mapping[ObjectKey, Mapping[str | None, Status]],
    ) -> int:
        collected = 0
        for obj in objects:
            if not obj.deleting:
                continue
            key = obj.key
            reported = {h for h in statuses.get(key, {}) if h is not None}
            if key.kind == "Domain" and key in placements:
                continue  # its host deletes the guest, then the object
            if key.kind in HOST_LEVEL_KINDS and reported:
                continue  # some host still has to clean up after it
            if key.kind not in HOST_LEVEL_KINDS and key.kind != "Domain":
                continue  # a Snapshot goes with its Domain's host
            if self._store.remove(key):  # not if its manifest came back meanwhile
                collected += 1
        return collected


def _by_key(
    entries: Sequence[tuple[ObjectKey, str | None, Status]],
) -> dict[ObjectKey, dict[str | None, Status]]:
    found: dict[ObjectKey, dict[str | None, Status]] = {}
    for key, host, status in entries:
        found.setdefault(key, {})[host] = status
    return found


def _says(status: Status | None, reason: str, message: str) -> bool:
    ready = status.condition("Ready") if status is not None else None
    return ready is not None and ready.reason == reason and ready.message == message


def _unschedulable(old: Status | None, generation: int, message: str, now: datetime) -> Status:
    status = old or Status()
    status = status.with_condition("Ready", "False", "Unschedulable", message, now)
    status = status.with_condition("Synced", "False", "Unschedulable", message, now)
    return Status(
        observed_generation=generation,
        conditions=status.conditions,
        last_reconcile_time=now,
        last_error=message,
    )
