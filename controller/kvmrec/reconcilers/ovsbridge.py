"""The OvsBridge reconciler: an Open vSwitch bridge with its ports, through OVSDB.

observe: the bridge row with its ports and their interfaces. decide: one ``BridgeChange``
with everything that differs (creation, datapath type, fail mode, the external ids the
manifest sets, ports to add and remove). act: one OVSDB transaction, with idempotent verbs.

Ports libvirt plugs for running guests (``vnetN`` with ``external_ids:vm-id``) and the
bridge's own internal port are derived state: never drift, never removed. Any other port
that is not in the manifest is kvmrec's to remove, as the bridge is kvmrec's.

The datapath: ``system`` is the kernel's and needs the openvswitch module; a kernel without
it gets a bridge whose ports never open. ``auto`` picks by what the kernel has, and an
explicit ``system`` on such a kernel is refused with a condition that says why.

Ownership is stamped in the bridge's ``external_ids`` (kind/name, uid, generation, digest,
which external ids the manifest set, so a key dropped from the manifest is removed, and
whether kvmrec adopted the bridge: reconcilers/adoption.py).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from kvmrec.api.kinds import ADOPT_ANNOTATION, DeletionPolicy, ObjectKey, OvsBridgeSpec
from kvmrec.backends import protocols
from kvmrec.backends.errors import BackendError
from kvmrec.backends.ovs.model import (
    DIGEST_KEY,
    GENERATION_KEY,
    OWNER_KEY,
    UNCHANGED,
    Bridge,
    BridgeChange,
)
from kvmrec.engine.clock import Clock
from kvmrec.engine.workers import PermanentError, Result
from kvmrec.reconcilers import adoption, recording
from kvmrec.reconcilers.dependencies import IN_USE_RETRY, Dependencies, deletion_plan
from kvmrec.reconcilers.plans import Plan, Step
from kvmrec.store.base import Store
from kvmrec.store.records import Drift, Status, StoredObject

KIND = "OvsBridge"
UID_KEY = "kvmrec-uid"
KEYS_KEY = "kvmrec-keys"  # the external ids the manifest set, comma-separated
ADOPTED_KEY = "kvmrec-adopted"  # "true": kvmrec took the bridge over, it did not create it
STAMP_KEYS = (OWNER_KEY, UID_KEY, GENERATION_KEY, DIGEST_KEY, KEYS_KEY, ADOPTED_KEY)
# What deletionPolicy Delete does to a bridge.
REMOVAL = "delete"


def _owner_value(name: str) -> str:
    return f"{KIND}/{name}"


def _stamped(bridge: Bridge, name: str) -> bool:
    return bridge.external_ids.get(OWNER_KEY) == _owner_value(name)


def _port_type(kind: str) -> str:
    return "system" if kind in ("", "system") else kind


class OvsBridgeReconciler:
    kind = KIND

    def __init__(
        self, store: Store, ovsdb: protocols.OvsBridges, clock: Clock, dependencies: Dependencies
    ) -> None:
        self._store = store
        self._ovs = ovsdb
        self._clock = clock
        self._deps = dependencies

    def datapath(self, spec: OvsBridgeSpec) -> str:
        if spec.datapath_type != "auto":
            return spec.datapath_type
        return "system" if self._ovs.kernel_datapath() else "netdev"

    def _owns(self, bridge: Bridge, obj: StoredObject) -> bool:
        if _stamped(bridge, obj.key.name):
            return True
        return obj.annotations.get(ADOPT_ANNOTATION) == "true"

    # -- decide --------------------------------------------------------------------------

    def plan(self, obj: StoredObject, status: Status | None = None) -> Plan:
        bridge = self._ovs.get_bridge(obj.key.name)
        if obj.deleting:
            return self._deletion_plan(obj, bridge)
        return self._decide(obj, OvsBridgeSpec.from_spec(obj.spec), bridge)[0]

    def _decide(
        self, obj: StoredObject, spec: OvsBridgeSpec, bridge: Bridge | None
    ) -> tuple[Plan, BridgeChange | None]:
        name = obj.key.name
        if bridge is not None and not self._owns(bridge, obj):
            message = (
                f"an OVS bridge named {name} exists and is not managed by kvmrec; it is left "
                f'alone (annotate the manifest with {ADOPT_ANNOTATION}: "true" to adopt it)'
            )
            return Plan(
                steps=(Step("conflict", detail=message),),
                blocked=message,
                blocked_reason="Conflict",
            ), None
        datapath = self.datapath(spec)
        if datapath == "system" and not self._ovs.kernel_datapath():
            message = (
                "this kernel has no openvswitch datapath (no /sys/module/openvswitch): a "
                "system bridge would never pass a packet; use datapathType netdev or auto"
            )
            return Plan(blocked=message, blocked_reason="DatapathUnavailable"), None

        stamp = {
            OWNER_KEY: _owner_value(name),
            UID_KEY: obj.uid,
            GENERATION_KEY: str(obj.generation),
            DIGEST_KEY: obj.digest,
            KEYS_KEY: ",".join(sorted(spec.external_ids)),
        }
        adopting = bridge is not None and not _stamped(bridge, name)
        if adopting or (bridge is not None and bridge.external_ids.get(ADOPTED_KEY) == "true"):
            stamp[ADOPTED_KEY] = "true"
        wanted_ports = {p.name: p.type for p in spec.ports}
        if bridge is None:
            change = BridgeChange(
                name,
                create=True,
                datapath_type=datapath,
                fail_mode=spec.fail_mode if spec.fail_mode is not None else UNCHANGED,
                set_external_ids={**spec.external_ids, **stamp},
                add_ports=tuple((p, t) for p, t in wanted_ports.items()),
            )
            created = [Step("create", detail=f"bridge {name} ({datapath})")]
            if spec.ports:
                created.append(Step("add-ports", (Drift("spec.ports", list(wanted_ports), []),)))
            return Plan(steps=tuple(created)), change

        drift = self._drift(spec, bridge, datapath)
        ports = {p.name: _port_type(p.type) for p in bridge.ports.values() if not p.derived}
        stale = [p for p, t in ports.items() if wanted_ports.get(p) != t]
        missing = [(p, t) for p, t in wanted_ports.items() if ports.get(p) != t]
        previous = [k for k in bridge.external_ids.get(KEYS_KEY, "").split(",") if k]
        change = BridgeChange(
            name,
            datapath_type=datapath,
            fail_mode=spec.fail_mode if spec.fail_mode is not None else UNCHANGED,
            set_external_ids={**spec.external_ids, **stamp},
            remove_external_ids=tuple(k for k in previous if k not in spec.external_ids),
            add_ports=tuple(missing),
            remove_ports=tuple(stale),
        )
        steps: list[Step] = []
        if adopting:
            steps.append(adoption.step("bridge", name, REMOVAL, spec.deletion_policy))
        if drift:
            steps.append(Step("update", tuple(drift), "one OVSDB transaction"))
        elif not adopting and any(bridge.external_ids.get(k) != v for k, v in stamp.items()):
            steps.append(Step("stamp", visible=False))
        if spec.promiscuous is not None and self._ovs.promiscuous(name) != spec.promiscuous:
            steps.append(
                Step(
                    "promiscuous",
                    (Drift("spec.promiscuous", spec.promiscuous, self._ovs.promiscuous(name)),),
                )
            )
        return Plan(steps=tuple(steps)), change

    def _drift(self, spec: OvsBridgeSpec, bridge: Bridge, datapath: str) -> list[Drift]:
        drift: list[Drift] = []
        actual_datapath = bridge.datapath_type or "system"
        if actual_datapath != datapath:
            drift.append(Drift("spec.datapathType", datapath, actual_datapath))
        if spec.fail_mode is not None and spec.fail_mode != bridge.fail_mode:
            drift.append(Drift("spec.failMode", spec.fail_mode, bridge.fail_mode))
        for key, value in sorted(spec.external_ids.items()):
            if bridge.external_ids.get(key) != value:
                drift.append(Drift(f"spec.externalIds.{key}", value, bridge.external_ids.get(key)))
        previous = [k for k in bridge.external_ids.get(KEYS_KEY, "").split(",") if k]
        for key in previous:
            if key not in spec.external_ids and key in bridge.external_ids:
                drift.append(Drift(f"spec.externalIds.{key}", None, bridge.external_ids[key]))
        wanted = [{"name": p.name, "type": p.type} for p in spec.ports]
        have = [
            {"name": p.name, "type": _port_type(p.type)}
            for p in sorted(bridge.ports.values(), key=lambda p: p.name)
            if not p.derived
        ]
        if sorted(wanted, key=lambda p: p["name"]) != have:
            drift.append(Drift("spec.ports", wanted, have))
        return drift

    # -- act -----------------------------------------------------------------------------

    def reconcile(self, key: ObjectKey) -> Result:
        obj = self._store.get(key)
        if obj is None:
            return Result()
        old = self._store.get_status(key)
        status = old or Status()
        with recording.failures_recorded(
            self._store, key, old, self._clock.wall(), unavailable="OvsdbUnavailable"
        ):
            if obj.deleting:
                return self._delete(obj, old, status)
            return self._converge(obj, old, status)

    def _converge(self, obj: StoredObject, old: Status | None, status: Status) -> Result:
        key, name = obj.key, obj.key.name
        spec = OvsBridgeSpec.from_spec(obj.spec)
        bridge = self._ovs.get_bridge(name)
        plan, change = self._decide(obj, spec, bridge)
        now = self._clock.wall()
        if plan.blocked is not None:
            status = recording.blocked(status, plan.blocked_reason, plan.blocked, now)
            recording.commit(self._store, key, old, status, now)
            raise PermanentError(plan.blocked)

        events: list[tuple[str, str, str]] = []
        if change is not None:
            self._ovs.apply(change)  # a no-op when nothing differs
        for step in plan.steps:
            if step.action == "promiscuous" and spec.promiscuous is not None:
                self._ovs.set_promiscuous(name, spec.promiscuous)
            if step.action == "adopt":
                message = adoption.adopted_event("bridge", name, spec.deletion_policy)
                events.append(("Normal", _EVENT_REASONS[step.action], message))
            elif step.visible:
                fields = ", ".join(d.field for d in step.fields) or step.detail
                events.append(("Normal", _EVENT_REASONS[step.action], f"{step.action}: {fields}"))

        bridge = self._ovs.get_bridge(name)
        if bridge is None:
            raise BackendError(f"bridge {name} vanished while it was being converged")
        drift = self._drift(spec, bridge, self.datapath(spec))
        if spec.promiscuous is not None:
            actual = self._ovs.promiscuous(name)
            if actual != spec.promiscuous:
                drift.append(Drift("spec.promiscuous", spec.promiscuous, actual))
        broken = [
            f"{p.name}: {p.error or 'the datapath could not open it'}"
            for p in bridge.ports.values()
            if p.error or p.ofport == -1
        ]
        status = status.with_condition(
            "Ready",
            "False" if broken else "True",
            "PortError" if broken else "Ready",
            "; ".join(broken),
            now,
        )
        fields = ", ".join(d.field for d in drift)
        status = (
            status.with_condition("Synced", "False", "Drifted", fields, now)
            if drift
            else status.with_condition("Synced", "True", "Synced", "", now)
        )
        status = replace(
            status,
            observed_generation=obj.generation,
            drift=tuple(drift),
            last_reconcile_time=now,
            last_error=None,
            retries=0,
            details={
                "state": bridge.datapath_type or "system",
                "guestPorts": sorted(
                    p.name for p in bridge.ports.values() if p.derived and p.name != name
                ),
            },
        )
        recording.commit(self._store, key, old, status, now, events)
        return Result()

    # -- deletion ------------------------------------------------------------------------

    def _deletion_plan(self, obj: StoredObject, bridge: Bridge | None) -> Plan:
        name = obj.key.name
        delete = f"delete bridge {name}"
        if bridge is not None and bridge.external_ids.get(ADOPTED_KEY) == "true":
            delete = adoption.deletion("bridge", name, REMOVAL)
        return deletion_plan(
            obj,
            exists=bridge is not None,
            # Only the stamp makes a bridge kvmrec's to delete (reconcilers/adoption.py).
            owned=bridge is not None and _stamped(bridge, name),
            holders=self._deps.holders(obj.key),
            orphan=OvsBridgeSpec.from_spec(obj.spec).deletion_policy is DeletionPolicy.ORPHAN,
            delete=delete,
        )

    def _delete(self, obj: StoredObject, old: Status | None, status: Status) -> Result:
        key, name = obj.key, obj.key.name
        bridge = self._ovs.get_bridge(name)
        plan = self._deletion_plan(obj, bridge)
        now = self._clock.wall()
        if plan.blocked is not None:
            status = recording.deletion_held(status, plan.blocked_reason, plan.blocked, now)
            recording.commit(self._store, key, old, status, now)
            return Result(requeue_after=IN_USE_RETRY)
        action = plan.steps[0].action if plan.steps else "gone"
        if action == "orphan":
            self._ovs.apply(BridgeChange(name, remove_external_ids=STAMP_KEYS))
            self._store.add_event(key, "Normal", "Orphaned", f"unstamped bridge {name}", now)
        elif action == "delete":
            self._ovs.delete_bridge(name)
            message = f"deleted bridge {name}"
            if bridge is not None and bridge.external_ids.get(ADOPTED_KEY) == "true":
                message += ", which kvmrec adopted and did not create"
            self._store.add_event(key, "Normal", "Deleted", message, now)
        elif action == "forget":
            self._store.add_event(key, "Warning", "NotOwned", f"bridge {name} left alone", now)
        self._store.remove(key)
        return Result()


_EVENT_REASONS: dict[str, Any] = {
    "create": "Created",
    "add-ports": "PortsAdded",
    "update": "Updated",
    "adopt": "Adopted",
    "stamp": "Stamped",
    "promiscuous": "Promiscuous",
}
