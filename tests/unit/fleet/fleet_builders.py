"""Hosts, Domains and host-level objects for the placement tests, built as the store holds
them: Domains and networks from manifests through the real parser (so the specs are the
validated, defaulted ones), hosts and placements as plain records."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import yaml

from kvmrec.api import manifests
from kvmrec.api.kinds import DomainSpec
from kvmrec.fleet.scheduling import Domain
from kvmrec.store.fleet_records import Capacity, DomainType, HostRecord, Placement
from kvmrec.store.records import StoredObject

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
MIB = 1024**2
GIB = 1024**3


def host(
    name: str,
    memory: int = GIB,
    vcpus: int = 2,
    *,
    labels: Mapping[str, str] | None = None,
    domain_type: DomainType = "kvm",
    ready: bool = True,
    cordoned: bool = False,
    unrenewed_for: int | None = None,
) -> HostRecord:
    return HostRecord(
        name=name,
        labels=dict(labels or {}),
        capacity=Capacity(memory, vcpus),
        domain_type=domain_type,
        ovs_datapath="system",
        version="0.1.0",
        ready=ready,
        last_heartbeat=T0 if ready else None,
        cordoned=cordoned,
        unrenewed_for=unrenewed_for,
    )


def stored(
    kind: str, name: str, spec: Mapping[str, Any], *, deleting: bool = False
) -> StoredObject:
    document = {
        "apiVersion": "kvmrec.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": dict(spec),
    }
    (manifest,) = manifests.parse_file(f"{name}.yaml", yaml.safe_dump(document).encode())
    return StoredObject(
        key=manifest.key,
        uid=f"uid-{name}",
        generation=1,
        digest=manifest.digest,
        spec=manifest.spec,
        source=manifest.source,
        deleting=deleting,
    )


def domain(
    name: str, memory: str = "256Mi", vcpus: int = 1, *, deleting: bool = False, **spec: Any
) -> Domain:
    obj = stored("Domain", name, {"memory": memory, "vcpus": vcpus, **spec}, deleting=deleting)
    return obj, DomainSpec.from_spec(obj.spec, name)


def selector(**labels: str) -> dict[str, Any]:
    return {"matchLabels": labels}


def network(name: str, *, deleting: bool = False, **labels: str) -> StoredObject:
    spec: dict[str, Any] = {"forward": "isolated"}
    if labels:
        spec["hostSelector"] = selector(**labels)
    return stored("Network", name, spec, deleting=deleting)


def bridge(name: str, **labels: str) -> StoredObject:
    spec: dict[str, Any] = {"hostSelector": selector(**labels)} if labels else {}
    return stored("OvsBridge", name, spec)


def placed(d: Domain, on: str) -> Placement:
    return Placement(d[0].key, on, "placed earlier", T0)
