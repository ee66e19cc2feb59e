"""What a fleet asks of its store, beside the desired state and status of ``base``.

    Hosts       the registration of each host, its readiness and cordon flag
    Placements  which host runs each Domain, changed only by compare-and-swap
    Migrations  requests to move a Domain to another host, and how each stands
    Election    one scheduler at a time
    Watching    changes under key prefixes, delivered to a callback, never lost silently
    FleetParts  all of these for one host, with its lease and the fleet-wide statuses
    FleetView   what an operator's command reads of a fleet: hosts, placements, objects;
                it holds no lease and writes nothing

Free of etcd: the records are those of ``fleet_records``; keys and prefixes are text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol

from kvmrec.api.objects import ObjectKey
from kvmrec.store.base import Store
from kvmrec.store.fleet_records import HostRecord, Migration, Placement
from kvmrec.store.records import Status, StoredObject


class Hosts(Protocol):
    def register(self, host: HostRecord, now: datetime) -> None:
        """Publish the host as live on its own lease, and what stays of it when the lease
        goes (labels, capacity, version); keeps the cordon flag an operator set."""

    def hosts(self) -> Sequence[HostRecord]:
        """Every host ever registered, sorted by name, ``ready`` while its live
        registration exists."""

    def host(self, name: str) -> HostRecord | None: ...

    def set_cordoned(self, name: str, cordoned: bool) -> bool:
        """Mark a host (un)schedulable; False if no such host was ever registered."""

    def set_stopped(self, name: str, when: datetime) -> bool:
        """Say the host's kvmrec stopped on purpose, its guests left running (cleared
        when it registers again): its lease's end is no death."""

    def set_draining(self, name: str, draining: bool) -> bool:
        """Mark a host as being drained (shown by ``kvmrec hosts``); False if unknown."""


@dataclass(frozen=True)
class Placed:
    """A placement with the revision a compare-and-swap compares."""

    placement: Placement
    revision: int


class Placing(NamedTuple):
    """A scheduler's decision for an unplaced Domain: the host, why, and the event
    (type, reason, message) that tells of it."""

    key: ObjectKey
    host: str
    reason: str
    event: tuple[str, str, str]


class Move(NamedTuple):
    """A relocation's change of placement: from and to which host, why, and the
    placement's revision it was decided at."""

    source: str
    target: str
    reason: str
    revision: int


class Placements(Protocol):
    def placement(self, key: ObjectKey) -> Placed | None: ...

    def placements(self, kind: str | None = None) -> Mapping[ObjectKey, Placed]: ...

    def place(
        self,
        key: ObjectKey,
        host: str,
        reason: str,
        expected: int | None,
        now: datetime,
        event: tuple[str, str, str] | None = None,
    ) -> bool:
        """Place ``key`` on ``host`` if its placement is still at revision ``expected``
        (None: still unplaced) and ``host`` is live; False when either changed.
        ``event`` (type, reason, message): the Domain's event that tells of it, written
        in the same transaction."""

    def place_new(self, placings: Sequence[Placing], now: datetime) -> Sequence[ObjectKey]:
        """Place each Domain of ``placings`` that is still unplaced on its host if that
        host is live, with its event, as ``place`` with ``expected=None`` would, in as few
        transactions as the store takes; the keys placed. Where a batch loses a compare (a
        Domain placed meanwhile, a host gone), its Domains are placed one by one, so a
        lost race costs only its own."""

    def unplace(self, key: ObjectKey, expected: int) -> bool:
        """Remove the placement if it is still at revision ``expected``."""


class FollowedPlacements(Placements, Protocol):
    def placement_change(self, change: Change) -> tuple[ObjectKey, str | None] | None:
        """The Domain a watched change of a placement is about and the host it names now
        (None: unplaced); None when the change is not of a placement."""


class Migrations(Protocol):
    """Requests to move Domains between hosts, one per Domain, each changed by
    compare-and-swap on its revision."""

    def migrations(self) -> tuple[Mapping[ObjectKey, Migration], int]:
        """Every request, and the store's revision they were read at."""

    def migration(self, key: ObjectKey) -> Migration | None: ...

    def request(self, migration: Migration, placement_revision: int) -> bool:
        """Store a new request if the Domain's placement is still at
        ``placement_revision`` and no request, or only a finished one at
        ``migration.revision``, is there (0: none); False when either changed."""

    def update(self, migration: Migration) -> bool:
        """Store what ``migration`` says now if its record is still at its revision."""

    def start(self, migration: Migration, seen: int) -> bool:
        """Mark the request Running if no request changed since revision ``seen`` (the
        limits were counted at it)."""

    def remove(self, key: ObjectKey, revision: int) -> bool: ...


class Election(Protocol):
    def start(self) -> None:
        """Campaign in the background until ``stop``."""

    def is_leader(self) -> bool:
        """True only while this candidate holds the leadership with time to spare."""

    def leader(self) -> str | None:
        """The identity of the current leader, if any."""

    def stop(self) -> None:
        """Resign (if leading) and stop campaigning."""


@dataclass(frozen=True)
class Change:
    """One change under a watched prefix."""

    type: str  # "PUT" | "DELETE"
    key: str
    value: bytes  # empty for a DELETE
    revision: int  # the store's revision of the change


ChangeCallback = Callable[[Sequence[Change]], None]
# (prefix, revision): the changes since the last delivered one are lost (compacted);
# read everything under ``prefix`` at ``revision``, the watch carries on after it.
RelistCallback = Callable[[str, int], None]


class Subscription(Protocol):
    def stop(self) -> None: ...


class Watching(Protocol):
    def watch(
        self,
        prefixes: Sequence[str],
        start_revision: int,
        on_changes: ChangeCallback,
        on_relist: RelistCallback,
    ) -> Subscription:
        """Deliver every change under ``prefixes`` from ``start_revision`` on, in order per
        prefix and one callback at a time, until the subscription is stopped."""


class HostLeasing(Protocol):
    """A host's lease as its agent holds it (store/etcd/leases.py's ``HostLease``)."""

    @property
    def lost(self) -> bool: ...

    def on_lost(self, callback: Callable[[], None]) -> None: ...

    def acquire(self) -> int: ...

    def reacquire(self) -> int: ...

    def close(self) -> None: ...


class FleetStatuses(Protocol):
    """The objects and every host's status of them, as the fleet's scheduler sees them."""

    def list(self, kind: str | None = None) -> Sequence[StoredObject]: ...

    def host_statuses(
        self, key: ObjectKey | None = None
    ) -> Sequence[tuple[ObjectKey, str | None, Status]]: ...

    def record_for(
        self,
        host: str | None,
        key: ObjectKey,
        status: Status,
        events: Sequence[tuple[str, str, str]],
        now: datetime,
    ) -> None:
        """Store the status ``host`` has of ``key`` (None: the fleet's own, while unplaced)."""

    def forget_status(self, key: ObjectKey, host: str | None) -> None: ...

    def relocate(
        self,
        key: ObjectKey,
        move: Move,
        status: Status,
        event: tuple[str, str, str],
        now: datetime,
    ) -> bool:
        """Move Domain ``key``'s placement as ``move`` says (compared at its revision),
        store the fleet's ``status`` of it with ``event`` and forget the old host's status,
        in one transaction; False, and nothing written, when the placement changed."""

    def add_event(
        self, key: ObjectKey | None, type_: str, reason: str, message: str, now: datetime
    ) -> None: ...

    def remove(self, key: ObjectKey) -> bool:
        """As ``Objects.remove``: False when the object is no longer marked for deletion."""


class FleetParts(Protocol):
    """Everything one host of a fleet needs of the store beside ``base.Store``."""

    @property
    def hosts(self) -> Hosts: ...

    @property
    def placements(self) -> FollowedPlacements: ...

    @property
    def migrations(self) -> Migrations: ...

    @property
    def watching(self) -> Watching: ...

    @property
    def lease(self) -> HostLeasing:
        """This host's lease; the store's writes carry it as their fence."""

    @property
    def statuses(self) -> FleetStatuses: ...

    @property
    def objects_prefix(self) -> str: ...

    @property
    def placements_prefix(self) -> str: ...

    @property
    def hosts_prefix(self) -> str: ...

    @property
    def migrations_prefix(self) -> str: ...

    def election(self, name: str, identity: str) -> Election: ...

    def revision(self) -> int:
        """The store's revision now (list at it, then watch from the next)."""


class FleetView(Protocol):
    """A fleet as a read-only command sees it (``kvmrec hosts``): no lease, no write."""

    def hosts(self) -> Sequence[HostRecord]:
        """Every host ever registered, sorted by name (``Hosts.hosts``)."""

    def placements(self) -> Mapping[ObjectKey, Placement]: ...

    def list(self, kind: str | None = None) -> Sequence[StoredObject]: ...

    def close(self) -> None: ...


class FleetControl(Protocol):
    """An operator's view of a fleet (``kvmrec migrate``, ``cordon``, ``drain``): the
    store as every host shares it, and its hosts, placements and migrations."""

    @property
    def store(self) -> Store: ...

    @property
    def hosts(self) -> Hosts: ...

    @property
    def placements(self) -> Placements: ...

    @property
    def migrations(self) -> Migrations: ...

    def close(self) -> None: ...
