"""The Domain reconciler: make a libvirt guest match its manifest, and keep it so.

observe: the stored desired state, and the domain's persistent definition, run state and
autostart flag from libvirt. diff: field by field, on the fields the manifest holds.
act, in order: define (or redefine) the domain with kvmrec's ownership stamp, set autostart,
then bring the run state to what ``runStrategy`` asks. Then observe again and record status:
``Ready`` (running for Always, shut off for Halted, defined for Manual), ``Synced``,
``RestartRequired`` when a running guest still runs an older definition, and the drift left.

kvmrec only touches domains that carry its stamp; a domain of the same name without it is a
conflict, reported and left alone, unless the manifest asks to adopt it
(``kvmrec.io/adopt: "true"``).

Fast resync: after a reconcile that found nothing to do, the domain's fingerprint (a hash
of its definition, state and autostart) is remembered. A periodic resync then lists all
domains once and reconciles only those whose fingerprint moved, so a no-op pass over many
guests costs about one XML read per guest, as a plain libvirt loop would.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from kvmrec.api import quantities
from kvmrec.api.kinds import (
    ADOPT_ANNOTATION,
    DeletionPolicy,
    DomainSpec,
    ObjectKey,
    RunStrategy,
)
from kvmrec.backends import domain_xml
from kvmrec.backends.domain_xml import DomainConfig, Owner
from kvmrec.backends.hypervisor import (
    BackendError,
    Fingerprint,
    Hypervisor,
    LiveDomain,
    Unavailable,
)
from kvmrec.engine.clock import Clock
from kvmrec.engine.workers import PermanentError, Result
from kvmrec.reconcilers import recording
from kvmrec.store.base import Store
from kvmrec.store.records import Drift, Status, StoredObject

log = logging.getLogger(__name__)

KIND = "Domain"

# Fields of the definition a running guest only picks up when it restarts.
_RESTART_FIELDS = ("type", "vcpus", "memory", "console", "disks")


def diff_config(spec: DomainSpec, config: DomainConfig) -> list[Drift]:
    """Fields of a definition that differ from the spec, as the operator wrote them."""
    drift: list[Drift] = []
    if config.type != spec.type:
        drift.append(Drift("spec.type", spec.type, config.type))
    if config.vcpus != spec.vcpus:
        drift.append(Drift("spec.vcpus", spec.vcpus, config.vcpus))
    if config.memory != quantities.to_kib(spec.memory) * 1024:
        drift.append(
            Drift(
                "spec.memory",
                quantities.format_bytes(spec.memory),
                quantities.format_bytes(config.memory),
            )
        )
    if config.console != spec.console:
        drift.append(Drift("spec.console", spec.console, config.console))
    if _by_bus(config.disks) != _by_bus(spec.disks):
        drift.append(Drift("spec.disks", _disks(spec.disks), _disks(config.disks)))
    return drift


def _by_bus(disks: Iterable[Any]) -> list[Any]:
    """Disks grouped by bus, in order within each bus: libvirt stores a definition's disks
    grouped by bus, so the order across buses cannot survive a define."""
    return sorted(disks, key=lambda d: d.bus)


def _disks(disks: Iterable[Any]) -> list[dict[str, Any]]:
    return [
        {"path": d.path, "format": d.format, "bus": d.bus, "readOnly": d.read_only} for d in disks
    ]


def _run_state_drift(spec: DomainSpec, live: LiveDomain) -> Drift | None:
    if spec.run_strategy is RunStrategy.ALWAYS and live.state != "running":
        return Drift("spec.runStrategy", "Always (running)", live.state)
    if spec.run_strategy is RunStrategy.HALTED and live.active:
        return Drift("spec.runStrategy", "Halted (shutoff)", live.state)
    return None


def diff(spec: DomainSpec, live: LiveDomain) -> list[Drift]:
    """Every managed field where ``live`` differs from ``spec``."""
    drift = diff_config(spec, live.config)
    if live.autostart != spec.autostart:
        drift.append(Drift("spec.autostart", spec.autostart, live.autostart))
    state = _run_state_drift(spec, live)
    if state is not None:
        drift.append(state)
    return drift


class DomainReconciler:
    """Converges one Domain key at a time."""

    kind = KIND

    def __init__(self, store: Store, hypervisor: Hypervisor, clock: Clock) -> None:
        self._store = store
        self._hv = hypervisor
        self._clock = clock
        self._lock = threading.Lock()
        self._converged: dict[str, Fingerprint] = {}

    # -- fast resync ---------------------------------------------------------------------

    def stale(self, keys: Iterable[ObjectKey]) -> list[ObjectKey]:
        """The keys whose domains changed since they were last found converged."""
        fingerprints = self._hv.fingerprints()
        with self._lock:
            converged = dict(self._converged)
        stale = []
        for key in keys:
            seen = converged.get(key.name)
            if seen is None or fingerprints.get(key.name) != seen:
                stale.append(key)
        return stale

    def _remember(self, name: str, fingerprint: Fingerprint | None) -> None:
        with self._lock:
            if fingerprint is None:
                self._converged.pop(name, None)
            else:
                self._converged[name] = fingerprint

    # -- reconcile -----------------------------------------------------------------------

    def reconcile(self, key: ObjectKey) -> Result:
        self._remember(key.name, None)
        obj = self._store.get(key)
        if obj is None:
            return Result()
        old = self._store.get_status(key)
        status = old or Status()
        now = self._clock.wall()
        try:
            if obj.deleting:
                self._delete(obj)
                return Result()
            return self._converge(obj, old, status)
        except Unavailable as exc:
            status = status.with_condition("Ready", "Unknown", "LibvirtUnavailable", str(exc), now)
            self._fail(key, old, status, exc, now)
            raise
        except BackendError as exc:
            status = status.with_condition("Synced", "False", "ReconcileFailed", str(exc), now)
            self._fail(key, old, status, exc, now)
            raise

    def _fail(
        self, key: ObjectKey, old: Status | None, status: Status, exc: Exception, now: Any
    ) -> None:
        status = replace(
            status, last_error=str(exc), retries=status.retries + 1, last_reconcile_time=now
        )
        if self._store.get(key) is not None:
            recording.commit(self._store, key, old, status, now)

    def _converge(self, obj: StoredObject, old: Status | None, status: Status) -> Result:
        key, name = obj.key, obj.key.name
        spec = DomainSpec.from_spec(obj.spec)
        owner = Owner(KIND, name, obj.uid, obj.generation, obj.digest)
        live = self._hv.get_domain(name)

        if live is not None and not self._owns(live, obj):
            now = self._clock.wall()
            message = (
                f"a domain named {name} exists and is not managed by kvmrec; it is left "
                f'alone (annotate the manifest with {ADOPT_ANNOTATION}: "true" to adopt it)'
            )
            status = replace(
                status.with_condition("Ready", "False", "Conflict", message, now).with_condition(
                    "Synced", "False", "Conflict", message, now
                ),
                last_reconcile_time=now,
                last_error=message,
                drift=(),
            )
            recording.commit(self._store, key, old, status, now)
            raise PermanentError(message)

        if not self._hv.domain_type_supported(spec.type):
            now = self._clock.wall()
            message = f"this host cannot run domain type {spec.type!r} (spec.type)"
            status = replace(
                status.with_condition("Ready", "False", "Unsupported", message, now).with_condition(
                    "Synced", "False", "Unsupported", message, now
                ),
                last_reconcile_time=now,
                last_error=message,
            )
            recording.commit(self._store, key, old, status, now)
            raise PermanentError(message)

        acted: list[tuple[str, str]] = []
        if live is None:
            self._hv.define_domain(domain_xml.build(name, spec, owner))
            acted.append(("Created", f"defined domain {name}"))
        else:
            fields = [d.field for d in diff_config(spec, live.config)]
            if fields or live.config.owner != owner:
                self._hv.define_domain(domain_xml.build(name, spec, owner))
                if fields:
                    acted.append(("Updated", "redefined: " + ", ".join(fields)))
                elif live.config.owner is None:
                    acted.append(("Adopted", f"took ownership of domain {name}"))

        live = self._hv.get_domain(name)
        if live is None:
            raise BackendError(f"domain {name} vanished while it was being defined")
        if live.autostart != spec.autostart:
            self._hv.set_autostart(name, spec.autostart)
            acted.append(("Autostart", f"autostart {live.autostart} -> {spec.autostart}"))
        if spec.run_strategy is RunStrategy.ALWAYS:
            if live.state == "paused":
                self._hv.resume_domain(name)
                acted.append(("Resumed", "resumed the paused guest"))
            elif not live.active:
                self._hv.start_domain(name)
                acted.append(("Started", f"started the guest (it was {live.state})"))
        elif spec.run_strategy is RunStrategy.HALTED and live.active:
            self._hv.destroy_domain(name)
            acted.append(("Stopped", f"stopped the guest (it was {live.state})"))

        now = self._clock.wall()
        if acted:
            live = self._hv.get_domain(name)
            if live is None:
                raise BackendError(f"domain {name} vanished while it was being converged")

        drift = diff(spec, live)
        restart = self._restart_fields(spec, live) if live.active else []
        drift += [d for d in restart if d.field not in {x.field for x in drift}]
        status = self._status(spec, live, status, drift, restart, obj.generation, now)
        events = [("Normal", reason, message) for reason, message in acted]
        recording.commit(self._store, key, old, status, now, events)
        if not acted and not drift:
            self._remember(name, live.fingerprint)
        return Result()

    def _restart_fields(self, spec: DomainSpec, live: LiveDomain) -> list[Drift]:
        running = self._hv.get_running_config(live.config.name)
        if running is None:
            return []
        return [
            d
            for d in diff_config(spec, running)
            if d.field.removeprefix("spec.") in _RESTART_FIELDS
        ]

    @staticmethod
    def _owns(live: LiveDomain, obj: StoredObject) -> bool:
        owner = live.config.owner
        if owner is not None and owner.kind == KIND and owner.name == obj.key.name:
            return True
        return obj.annotations.get(ADOPT_ANNOTATION) == "true"

    def _status(
        self,
        spec: DomainSpec,
        live: LiveDomain,
        status: Status,
        drift: list[Drift],
        restart: list[Drift],
        generation: int,
        now: Any,
    ) -> Status:
        if spec.run_strategy is RunStrategy.ALWAYS:
            ready = live.state == "running"
            ready_reason = "Running" if ready else "NotRunning"
        elif spec.run_strategy is RunStrategy.HALTED:
            ready = not live.active
            ready_reason = "Halted" if ready else "StillRunning"
        else:
            ready = True
            ready_reason = "Running" if live.state == "running" else "Defined"
        message = "" if ready else f"the guest is {live.state}"
        status = status.with_condition(
            "Ready", "True" if ready else "False", ready_reason, message, now
        )
        if drift:
            fields = ", ".join(d.field for d in drift)
            status = status.with_condition("Synced", "False", "Drifted", fields, now)
        else:
            status = status.with_condition("Synced", "True", "Synced", "", now)
        if restart:
            fields = ", ".join(d.field for d in restart)
            status = status.with_condition(
                "RestartRequired",
                "True",
                "DefinitionChanged",
                f"the running guest picks up {fields} at its next restart",
                now,
            )
        elif status.condition("RestartRequired") is not None:
            status = status.with_condition("RestartRequired", "False", "UpToDate", "", now)
        return replace(
            status,
            observed_generation=generation,
            drift=tuple(drift),
            last_reconcile_time=now,
            last_error=None,
            retries=0,
            details={"state": live.state, "uuid": live.config.uuid},
        )

    # -- deletion ------------------------------------------------------------------------

    def _delete(self, obj: StoredObject) -> None:
        key, name = obj.key, obj.key.name
        spec = DomainSpec.from_spec(obj.spec)
        live = self._hv.get_domain(name)
        now = self._clock.wall()
        if live is None:
            self._store.add_event(key, "Normal", "Deleted", f"domain {name} is gone", now)
        elif not self._owns(live, obj):
            self._store.add_event(
                key,
                "Warning",
                "NotOwned",
                f"domain {name} is not managed by kvmrec; left as it is",
                now,
            )
        elif spec.deletion_policy is DeletionPolicy.ORPHAN:
            self._hv.set_owner(name, None)
            self._store.add_event(
                key,
                "Normal",
                "Orphaned",
                f"removed kvmrec's stamp from {name}; left as it is",
                now,
            )
        else:
            if live.active:
                self._hv.destroy_domain(name)
            self._hv.undefine_domain(name)
            self._store.add_event(
                key,
                "Normal",
                "Deleted",
                f"destroyed and undefined domain {name} (disk images kept)",
                now,
            )
        self._store.remove(key)
        self._remember(name, None)
