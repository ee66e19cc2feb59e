"""Which hosts a ``hostSelector`` picks: those whose labels have every ``matchLabels`` pair.

An empty or absent selector picks every host, as a Kubernetes DaemonSet without a node
selector runs on every node. Host-level kinds (Network, OvsBridge, SnapshotPolicy) apply on
each host their selector picks, ready or not: a host that is away still has them, and its
status says it is away. A Domain is placed on one host only (scheduling.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from kvmrec.api.kinds import ObjectKey, host_selector
from kvmrec.store.fleet_records import HostRecord
from kvmrec.store.records import StoredObject

HOST_LEVEL_KINDS = frozenset({"Network", "OvsBridge", "SnapshotPolicy"})


def mismatches(labels: Mapping[str, str], match_labels: Mapping[str, str]) -> list[str]:
    """Why ``labels`` fail ``match_labels``, one phrase per pair ([] when they match)."""
    found = []
    for key, value in sorted(match_labels.items()):
        actual = labels.get(key)
        if actual == value:
            continue
        has = f"has {key}={actual}" if actual is not None else f"no label {key}"
        found.append(f"label {key}={value} does not match ({has})")
    return found


def applies_to(host: HostRecord, match_labels: Mapping[str, str]) -> bool:
    """Whether a selector's ``matchLabels`` picks ``host`` (an empty one picks every host)."""
    return not mismatches(host.labels, match_labels)


def hosts_of(obj: StoredObject, hosts: Iterable[HostRecord]) -> list[str]:
    """The names of the hosts a host-level object applies on, sorted."""
    selector = host_selector(obj.spec)
    return sorted(h.name for h in hosts if applies_to(h, selector))


def applicable(
    hosts: Iterable[HostRecord], objects: Iterable[StoredObject]
) -> dict[str, frozenset[ObjectKey]]:
    """For each host, the keys of the host-level objects that apply on it.

    Objects of other kinds are left out, and so are those being deleted: a Domain is not
    placed where what it uses is going away."""
    levelled = [o for o in objects if o.key.kind in HOST_LEVEL_KINDS and not o.deleting]
    return {
        h.name: frozenset(o.key for o in levelled if applies_to(h, host_selector(o.spec)))
        for h in hosts
    }
