"""Placing Domains on hosts: filter the hosts that can take a Domain, then spread.

As in the Kubernetes scheduler, each unplaced Domain goes through filters, then a score:

- filters, per host: it is Ready (its lease is alive, and renewed lately: a host that
  stopped renewing is gone before etcd deletes its key) and not cordoned; it is the Domain's
  ``spec.host``, or its labels match ``spec.hostSelector``; it offers the domain type (a
  kvm Domain needs a kvm host, a kvm host runs qemu guests too); the Networks and
  OvsBridges the Domain's interfaces use apply on it (a network or bridge kvmrec does not
  manage is the operator's to provide, as on a single host); an HA Domain's disks are on
  storage it shares (fleet/shared_storage.py); its free memory and vCPUs fit:
  capacity times the overcommit ratio, less what the Domains placed on it take.
- score: the host left least allocated once the Domain is on it (the mean of its memory
  and vCPU fractions), so Domains spread; ties go by host name, so a pass is deterministic.

A pass places Domains one at a time and counts each on its host before the next, so two
Domains never both take the last room. A placed Domain is never moved; it only counts
against its host, ready or not. A Domain that fits nowhere gets a message naming every host
and what it lacks: ``0/3 hosts are available: lab1: needs 512 MiB, 256 MiB free; ...``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from kvmrec.api.kinds import DomainSpec, ObjectKey
from kvmrec.fleet import selectors, shared_storage
from kvmrec.reconcilers.dependencies import domain_refs
from kvmrec.store.fleet_records import Capacity, HostRecord, Placement
from kvmrec.store.records import StoredObject

Domain = tuple[StoredObject, DomainSpec]

_MIB = 1024**2
# A host renews its lease every 5 s and stops acting 10 s after its last renewal; etcd's
# count (whole seconds, rounded up here) at 9 means a renewal is 3 s late or more. Placing
# a Domain on such a host would leave it where nothing starts it: a new scheduler takes
# over when the dead one's election lease runs out, 13 s or more after its host last
# renewed, and its first pass may come before that host's own key is deleted.
SILENT = 9


@dataclass(frozen=True)
class Overcommit:
    """How far the Domains placed on a host may exceed what it has: capacity x ratio.

    Memory defaults to 1.0: guest memory is really used, and a hypervisor that swaps (or
    kills a guest when it runs out) is worse than a Domain that waits. CPU defaults to 4.0:
    most vCPUs idle most of the time, and a busy one only runs slower (OpenStack Nova
    allows 16.0; 4.0 keeps a guest's share of a core useful)."""

    memory: float = 1.0
    cpu: float = 4.0

    def of(self, capacity: Capacity) -> Capacity:
        """What Domains may take of a host of ``capacity``."""
        return Capacity(int(capacity.memory_bytes * self.memory), int(capacity.vcpus * self.cpu))


DEFAULT_OVERCOMMIT = Overcommit()


@dataclass(frozen=True)
class Scheduled:
    """Domain ``key`` goes to ``host``, for ``reason``."""

    key: ObjectKey
    host: str
    reason: str

    def placement(self, time: datetime) -> Placement:
        return Placement(self.key, self.host, self.reason, time)


@dataclass(frozen=True)
class Unschedulable:
    """No host takes Domain ``key``: ``message`` says why, ``hosts`` each host's lacks."""

    key: ObjectKey
    message: str
    hosts: tuple[tuple[str, str], ...]  # (host name, what it lacks), by host name


Decision = Scheduled | Unschedulable


def parsed(objects: Iterable[StoredObject]) -> list[Domain]:
    """The Domains among ``objects``, each with its parsed spec."""
    return [
        (o, DomainSpec.from_spec(o.spec, o.key.name)) for o in objects if o.key.kind == "Domain"
    ]


def allocations(
    domains: Iterable[Domain], placements: Mapping[ObjectKey, Placement]
) -> dict[str, Capacity]:
    """What the placed Domains take of each host (hosts without any are left out)."""
    used: dict[str, Capacity] = {}
    for obj, spec in domains:
        placed = placements.get(obj.key)
        if placed is not None:
            was = used.get(placed.host, Capacity(0, 0))
            used[placed.host] = Capacity(was.memory_bytes + spec.memory, was.vcpus + spec.vcpus)
    return used


def schedule(
    hosts: Sequence[HostRecord],
    domains: Iterable[Domain],
    placements: Mapping[ObjectKey, Placement],
    host_level: Iterable[StoredObject],
    *,
    overcommit: Overcommit = DEFAULT_OVERCOMMIT,
) -> dict[ObjectKey, Decision]:
    """A decision for each Domain that is not placed and not being deleted.

    ``hosts`` are every registered host (those not Ready are named in the messages);
    ``domains`` every Domain of the desired state, placed or not; ``host_level`` the
    Network and OvsBridge objects (other kinds are ignored). Decisions come in the order
    they were made: pinned Domains first, then those with a selector, then the rest (the
    fewer hosts a Domain may take, the earlier it chooses), larger before smaller (as
    first-fit decreasing packs), then by name."""
    hosts = sorted(hosts, key=lambda h: h.name)
    everything = list(domains)
    levelled = [o for o in host_level if o.key.kind in selectors.HOST_LEVEL_KINDS]
    managed = frozenset(o.key for o in levelled)
    applies = selectors.applicable(hosts, levelled)
    used = allocations(everything, placements)
    pending = [d for d in everything if d[0].key not in placements and not d[0].deleting]
    pending.sort(key=_order)
    decisions: dict[ObjectKey, Decision] = {}
    for obj, spec in pending:
        fitting: list[tuple[float, str]] = []
        lacking: list[tuple[str, str]] = []
        for host in hosts:
            room = overcommit.of(host.capacity)
            taken = used.get(host.name, Capacity(0, 0))
            lacks = _lacks(host, spec, room, taken, applies.get(host.name, frozenset()), managed)
            if lacks:
                lacking.append((host.name, " and ".join(lacks)))
            else:
                fitting.append((_fraction(room, taken, spec), host.name))
        if not fitting:
            decisions[obj.key] = _unschedulable(obj.key, spec, hosts, lacking)
            continue
        _, chosen = min(fitting)
        host = next(h for h in hosts if h.name == chosen)
        room = overcommit.of(host.capacity)
        taken = used.get(chosen, Capacity(0, 0))
        decisions[obj.key] = Scheduled(
            obj.key, chosen, _reason(host, spec, room, taken, len(fitting))
        )
        used[chosen] = Capacity(taken.memory_bytes + spec.memory, taken.vcpus + spec.vcpus)
    return decisions


def silent(host: HostRecord) -> bool:
    """A Ready host that has stopped renewing its lease (see ``SILENT``)."""
    return host.ready and host.unrenewed_for is not None and host.unrenewed_for >= SILENT


def _order(domain: Domain) -> tuple[bool, bool, int, int, str]:
    obj, spec = domain
    return (spec.host is None, not spec.host_selector, -spec.memory, -spec.vcpus, obj.key.name)


def _lacks(
    host: HostRecord,
    spec: DomainSpec,
    room: Capacity,
    taken: Capacity,
    applies: frozenset[ObjectKey],
    managed: frozenset[ObjectKey],
) -> list[str]:
    """What ``host`` lacks to take a Domain of ``spec`` ([] when it can)."""
    if spec.host is not None and host.name != spec.host:
        return [f"not the pinned host (spec.host {spec.host})"]
    if not host.ready:
        return ["not Ready"]
    if silent(host):
        return ["not renewing its lease"]
    if host.cordoned:
        return ["cordoned"]
    lacks = selectors.mismatches(host.labels, spec.host_selector)
    if spec.type == "kvm" and host.domain_type != "kvm":
        lacks.append(f"no kvm (domain type {host.domain_type} only)")
    unshared = shared_storage.unshared(spec, host.shared_storage)
    if unshared:
        lacks.append(f"does not share {', '.join(unshared)} (HA disks need shared_storage)")
    for ref in domain_refs(spec):
        if ref.managed in managed and ref.managed not in applies:
            lacks.append(f"{ref.managed} does not apply here (its hostSelector)")
    free_memory = room.memory_bytes - taken.memory_bytes
    if spec.memory > free_memory:
        lacks.append(f"needs {size(spec.memory)}, {size(max(free_memory, 0))} free")
    free_vcpus = room.vcpus - taken.vcpus
    if spec.vcpus > free_vcpus:
        lacks.append(f"needs {spec.vcpus} vCPUs, {max(free_vcpus, 0)} free")
    return lacks


def _fraction(room: Capacity, taken: Capacity, spec: DomainSpec) -> float:
    """How allocated the host is once the Domain is on it: the mean of memory and CPU."""
    memory = (taken.memory_bytes + spec.memory) / room.memory_bytes if room.memory_bytes else 1.0
    vcpus = (taken.vcpus + spec.vcpus) / room.vcpus if room.vcpus else 1.0
    return (memory + vcpus) / 2


def _reason(host: HostRecord, spec: DomainSpec, room: Capacity, taken: Capacity, fit: int) -> str:
    free = (
        f"{size(room.memory_bytes - taken.memory_bytes)} of {size(room.memory_bytes)} and "
        f"{room.vcpus - taken.vcpus} of {room.vcpus} vCPUs free"
    )
    if spec.host is not None:
        why = "pinned by spec.host"
    elif fit == 1:
        why = "the only host that fits"
    else:
        why = f"least allocated of {fit} hosts that fit"
    matched = ",".join(f"{k}={v}" for k, v in sorted(spec.host_selector.items()))
    name = f"{host.name} ({matched})" if matched else host.name
    return f"{name}: {free}, {why}"


def _unschedulable(
    key: ObjectKey, spec: DomainSpec, hosts: Sequence[HostRecord], lacking: list[tuple[str, str]]
) -> Unschedulable:
    if spec.host is not None and all(h.name != spec.host for h in hosts):
        lacking.append((spec.host, "not registered (spec.host)"))
    said = "; ".join(f"{name}: {lacks}" for name, lacks in lacking) or "no host has registered"
    return Unschedulable(key, f"0/{len(hosts)} hosts are available: {said}", tuple(lacking))


def size(nbytes: int) -> str:
    """Memory as a reader takes it in: ``448 MiB``, ``1.5 GiB``."""
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.2f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{nbytes / _MIB:.1f}".rstrip("0").rstrip(".") + " MiB"
