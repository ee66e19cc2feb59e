"""``kvmrec plan``: what the next reconcile would do, object by object and field by field.

The manifests are read and checked exactly as the service would (``ManifestSync.compute``),
compared with the stored state (for generations, ownership and deletions) and with the live
host, and each object's reconciler is asked for its plan: the same decision code a real
reconcile runs, stopped before it acts. Nothing is written, not even the state file.

With a candidate (``kvmrec plan -f``, sources/candidates.py) the candidate files are laid
over the manifest directory and the plan is that of the objects they define or, replacing a
file, drop; errors are those of the candidate files (named by their own paths) and of the
directory as a whole.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from kvmrec import store as stores
from kvmrec.api.kinds import Manifest, ObjectKey
from kvmrec.api.selectors import Selector
from kvmrec.backends import protocols
from kvmrec.backends.errors import Unavailable
from kvmrec.backends.libvirt.hypervisor import Hypervisor
from kvmrec.backends.ovs.client import Ovsdb
from kvmrec.engine.clock import SystemClock
from kvmrec.reconcilers import registry
from kvmrec.reconcilers.plans import Plan, plan_fields
from kvmrec.settings import Settings
from kvmrec.sources import candidates, trust
from kvmrec.sources.manifests import GUARD_SOURCE, ManifestSync, of_directory
from kvmrec.sources.scanning import scan
from kvmrec.store.base import Store, StoreError
from kvmrec.store.records import Status, StoredObject


@dataclass
class PlanReport:
    changes: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"changes": self.changes, "errors": self.errors}


def _candidate(manifest: Manifest, stored: StoredObject | None) -> StoredObject:
    """The object as the store would hold it once this manifest is applied."""
    if stored is None:
        return StoredObject(
            key=manifest.key,
            uid="(new)",
            generation=1,
            digest=manifest.digest,
            spec=manifest.spec,
            source=manifest.source,
            labels=manifest.labels,
            annotations=manifest.annotations,
        )
    generation = stored.generation + (1 if stored.digest != manifest.digest else 0)
    return StoredObject(
        key=manifest.key,
        uid=stored.uid,
        generation=generation,
        digest=manifest.digest,
        spec=manifest.spec,
        source=manifest.source,
        labels=manifest.labels,
        annotations=manifest.annotations,
    )


def plan(
    settings: Settings,
    only: ObjectKey | None = None,
    progress: Callable[[int, int], None] | None = None,
    candidate: candidates.Candidate | None = None,
    selector: Selector | None = None,
) -> PlanReport:
    """Raises ``Unavailable`` when libvirt cannot be reached. ``selector``: only the
    objects whose manifests' labels (the stored ones, for a deletion) match."""
    store: Store
    try:
        store = stores.open(settings.store_location, read_only=True)
    except StoreError:
        # Nothing applied yet: everything is new. An empty store in memory, so that no
        # state file appears as a side effect of a dry run.
        store = stores.open(":memory:")
    hypervisor = Hypervisor(settings.connect)
    ovsdb = Ovsdb(settings.ovsdb)
    try:
        hypervisor.open()
        with contextlib.suppress(Unavailable):
            ovsdb.open()  # bridges then plan as unavailable; domains and networks still do
        return _plan(settings, store, hypervisor, ovsdb, only, progress, candidate, selector)
    finally:
        hypervisor.close()
        ovsdb.close()
        store.close()


def _plan(
    settings: Settings,
    store: Store,
    hypervisor: protocols.LibvirtHost,
    ovsdb: protocols.OvsBridges,
    only: ObjectKey | None,
    progress: Callable[[int, int], None] | None,
    candidate: candidates.Candidate | None,
    selector: Selector | None = None,
) -> PlanReport:
    clock = SystemClock()
    stored = {obj.key: obj for obj in store.list()}
    statuses = store.statuses()
    sync = ManifestSync(store, clock, allow_mass_delete=settings.allow_mass_delete)
    snapshot = scan(settings.manifests)
    if not settings.insecure_manifests:  # judged as the service judges it
        sources = {obj.source for obj in stored.values() if of_directory(obj)}
        snapshot = trust.enforce(snapshot, settings.manifests, expected=sources)
    if candidate is not None:
        snapshot = candidates.overlay(snapshot, candidate)
    desired = sync.compute(snapshot, stored.values())
    kinds = registry.build(
        store,
        clock,
        hypervisor,
        ovsdb,
        disk_roots=settings.disk_roots,
        allow_device_disks=settings.allow_device_disks,
    )

    objects: list[StoredObject] = [
        _candidate(m, stored.get(key)) for key, m in desired.manifests.items()
    ]
    objects += [stored[key] for key in desired.held]
    objects += [replace(stored[key], deleting=True) for key in desired.doomed]
    objects += [obj for obj in stored.values() if obj.deleting and obj.key not in desired.manifests]
    errors = sorted(desired.errors.items())
    if candidate is not None:
        origins = candidate.origins
        objects = [obj for obj in objects if obj.source in origins]
        errors = [(origins.get(s, s), m) for s, m in errors if s in origins or s == GUARD_SOURCE]

    report = PlanReport(errors=[{"source": s, "message": m} for s, m in errors])
    for index, obj in enumerate(sorted(objects, key=lambda o: o.key)):
        if progress is not None:
            progress(index, len(objects))
        if only is not None and obj.key != only:
            continue
        if selector is not None and not selector.matches(obj.labels):
            continue
        planner = kinds.get(obj.key.kind)
        if planner is None:
            continue
        try:
            result = planner.plan(obj, statuses.get(obj.key) or Status())
        except Unavailable as exc:
            result = Plan(blocked=str(exc), blocked_reason="Unavailable")
        for step in result.visible:
            report.changes.append(
                {
                    "kind": obj.key.kind,
                    "name": obj.key.name,
                    "action": step.action,
                    "fields": plan_fields([step]),
                    "detail": step.detail,
                }
            )
        if result.blocked and not result.visible:
            report.changes.append(
                {
                    "kind": obj.key.kind,
                    "name": obj.key.name,
                    "action": "blocked",
                    "fields": [],
                    "detail": result.blocked,
                }
            )
        if result.wait_reason == "CrashLoopBackOff":
            report.changes.append(
                {
                    "kind": obj.key.kind,
                    "name": obj.key.name,
                    "action": "wait",
                    "fields": [],
                    "detail": f"crash-loop backoff: start again in {result.wait:.0f}s",
                }
            )
        if result.wait_reason == "CpuNotSupported":
            report.changes.append(
                {
                    "kind": obj.key.kind,
                    "name": obj.key.name,
                    "action": "wait",
                    "fields": [],
                    "detail": f"the host refused spec.cpu: start again in {result.wait:.0f}s",
                }
            )
    return report
