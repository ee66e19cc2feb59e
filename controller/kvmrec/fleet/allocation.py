"""What the Domains placed on each host take of it: their ``spec.memory`` and ``vcpus``.

The scheduler counts it against each host's room, and ``kvmrec hosts`` shows it beside the
host's capacity, so both read one sum. Kept apart from ``scheduling`` so a read-only
command parses Domain specs without loading what placement decisions need.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from kvmrec.api.kinds import DomainSpec, ObjectKey
from kvmrec.store.fleet_records import Capacity, Placement
from kvmrec.store.records import StoredObject

Domain = tuple[StoredObject, DomainSpec]


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
