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

from collections.abc import Callable, Mapping
from typing import ClassVar

from kvmrec.api.kinds import DeletionPolicy, ObjectKey, OvsBridgeSpec
from kvmrec.backends import protocols
from kvmrec.backends.ovs.model import (
    DIGEST_KEY,
    GENERATION_KEY,
    OWNER_KEY,
    UNCHANGED,
    Bridge,
    BridgeChange,
)
from kvmrec.engine.clock import Clock
from kvmrec.reconcilers import adoption
from kvmrec.reconcilers.dependencies import Dependencies
from kvmrec.reconcilers.kind import Report, StampedKind, Turn
from kvmrec.reconcilers.plans import Plan, Step
from kvmrec.reconcilers.reconciling import Reconciler
from kvmrec.store.base import Store
from kvmrec.store.records import Drift, StoredObject

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


class OvsBridge(StampedKind[OvsBridgeSpec, Bridge]):
    """The OvsBridge kind: its own parse, observe, decide, act and report."""

    kind = KIND
    noun = "bridge"
    removal = REMOVAL
    unavailable = "OvsdbUnavailable"
    dependency = True
    events = "bridge"
    events_of_unmanaged = True
    relisted_by = "ovsdb"
    reasons: ClassVar[Mapping[str, str]] = {
        "create": "Created",
        "add-ports": "PortsAdded",
        "update": "Updated",
        "adopt": "Adopted",
        "stamp": "Stamped",
        "promiscuous": "Promiscuous",
    }

    def __init__(self, ovsdb: protocols.OvsBridges, dependencies: Dependencies | None) -> None:
        super().__init__(dependencies)
        self._ovs = ovsdb

    def datapath(self, spec: OvsBridgeSpec) -> str:
        if spec.datapath_type != "auto":
            return spec.datapath_type
        return "system" if self._ovs.kernel_datapath() else "netdev"

    def parse(self, obj: StoredObject) -> OvsBridgeSpec:
        return OvsBridgeSpec.from_spec(obj.spec)

    def observe(self, obj: StoredObject, spec: OvsBridgeSpec) -> Bridge | None:
        return self._ovs.get_bridge(obj.key.name)

    def stamped(self, turn: Turn[OvsBridgeSpec, Bridge]) -> bool:
        return turn.live is not None and _stamped(turn.live, turn.name)

    def adopted(self, turn: Turn[OvsBridgeSpec, Bridge]) -> bool:
        return turn.live is not None and turn.live.external_ids.get(ADOPTED_KEY) == "true"

    def deletion_policy(self, spec: OvsBridgeSpec) -> DeletionPolicy:
        return spec.deletion_policy

    def delete_detail(self, turn: Turn[OvsBridgeSpec, Bridge], detail: str) -> str:
        return detail if self.adopted(turn) else f"delete bridge {turn.name}"

    # -- decide --------------------------------------------------------------------------

    def decide(self, turn: Turn[OvsBridgeSpec, Bridge]) -> Plan:
        spec, bridge, name = turn.spec, turn.live, turn.name
        datapath = self.datapath(spec)
        if datapath == "system" and not self._ovs.kernel_datapath():
            message = (
                "this kernel has no openvswitch datapath (no /sys/module/openvswitch): a "
                "system bridge would never pass a packet; use datapathType netdev or auto"
            )
            return Plan(blocked=message, blocked_reason="DatapathUnavailable")
        if bridge is None:
            created = [Step("create", detail=f"bridge {name} ({datapath})")]
            if spec.ports:
                wanted = [p.name for p in spec.ports]
                created.append(Step("add-ports", (Drift("spec.ports", wanted, []),)))
            return Plan(steps=tuple(created))
        adopting = not _stamped(bridge, name)
        steps: list[Step] = []
        if adopting:
            steps.append(adoption.step("bridge", name, REMOVAL, spec.deletion_policy))
        drift = self._drift(spec, bridge, datapath)
        if drift:
            steps.append(Step("update", tuple(drift), "one OVSDB transaction"))
        elif not adopting and any(
            bridge.external_ids.get(k) != v for k, v in self._stamp(turn).items()
        ):
            steps.append(Step("stamp", visible=False))
        if spec.promiscuous is not None:
            actual = self._ovs.promiscuous(name)
            if actual != spec.promiscuous:
                steps.append(
                    Step("promiscuous", (Drift("spec.promiscuous", spec.promiscuous, actual),))
                )
        return Plan(steps=tuple(steps))

    def _stamp(self, turn: Turn[OvsBridgeSpec, Bridge]) -> dict[str, str]:
        obj, bridge, name = turn.obj, turn.live, turn.name
        stamp = {
            OWNER_KEY: _owner_value(name),
            UID_KEY: obj.uid,
            GENERATION_KEY: str(obj.generation),
            DIGEST_KEY: obj.digest,
            KEYS_KEY: ",".join(sorted(turn.spec.external_ids)),
        }
        adopting = bridge is not None and not _stamped(bridge, name)
        if adopting or (bridge is not None and bridge.external_ids.get(ADOPTED_KEY) == "true"):
            stamp[ADOPTED_KEY] = "true"
        return stamp

    def _change(self, turn: Turn[OvsBridgeSpec, Bridge]) -> BridgeChange:
        """Everything that differs, as one OVSDB transaction."""
        spec, bridge, name = turn.spec, turn.live, turn.name
        stamp = self._stamp(turn)
        wanted_ports = {p.name: p.type for p in spec.ports}
        fail_mode = spec.fail_mode if spec.fail_mode is not None else UNCHANGED
        if bridge is None:
            return BridgeChange(
                name,
                create=True,
                datapath_type=self.datapath(spec),
                fail_mode=fail_mode,
                set_external_ids={**spec.external_ids, **stamp},
                add_ports=tuple((p, t) for p, t in wanted_ports.items()),
            )
        ports = {p.name: _port_type(p.type) for p in bridge.ports.values() if not p.derived}
        previous = [k for k in bridge.external_ids.get(KEYS_KEY, "").split(",") if k]
        return BridgeChange(
            name,
            datapath_type=self.datapath(spec),
            fail_mode=fail_mode,
            set_external_ids={**spec.external_ids, **stamp},
            remove_external_ids=tuple(k for k in previous if k not in spec.external_ids),
            add_ports=tuple((p, t) for p, t in wanted_ports.items() if ports.get(p) != t),
            remove_ports=tuple(p for p, t in ports.items() if wanted_ports.get(p) != t),
        )

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

    def act(self, turn: Turn[OvsBridgeSpec, Bridge], step: Step) -> str:
        spec, name = turn.spec, turn.name
        match step.action:
            case "create" | "update" | "adopt" | "stamp":
                # One transaction carries every change (idempotent verbs): the first of
                # these steps applies it, the others find it done.
                if not turn.notes.get("applied"):
                    self._ovs.apply(self._change(turn))
                    turn.notes["applied"] = True
                if step.action == "adopt":
                    return adoption.adopted_event("bridge", name, spec.deletion_policy)
            case "add-ports":
                pass  # in the creating transaction
            case "promiscuous":
                if spec.promiscuous is not None:
                    self._ovs.set_promiscuous(name, spec.promiscuous)
            case "orphan":
                self._ovs.apply(BridgeChange(name, remove_external_ids=STAMP_KEYS))
                return f"unstamped bridge {name}"
            case "delete":
                self._ovs.delete_bridge(name)
                message = f"deleted bridge {name}"
                if self.adopted(turn):
                    message += ", which kvmrec adopted and did not create"
                return message
            case _:
                raise AssertionError(f"unknown step {step.action}")
        if not step.visible:
            return ""
        return f"{step.action}: " + (", ".join(d.field for d in step.fields) or step.detail)

    # -- report --------------------------------------------------------------------------

    def report(self, turn: Turn[OvsBridgeSpec, Bridge]) -> Report:
        spec, bridge, name = turn.spec, turn.live, turn.name
        assert bridge is not None
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
        return Report(
            not broken,
            "PortError" if broken else "Ready",
            "; ".join(broken),
            drift=tuple(drift),
            details={
                "state": bridge.datapath_type or "system",
                "guestPorts": sorted(
                    p.name for p in bridge.ports.values() if p.derived and p.name != name
                ),
            },
        )


class OvsBridgeReconciler(Reconciler[OvsBridgeSpec, Bridge]):
    def __init__(
        self,
        store: Store,
        ovsdb: protocols.OvsBridges,
        clock: Clock,
        dependencies: Dependencies | None,
        *,
        on_step: Callable[[ObjectKey, Step], None] | None = None,
    ) -> None:
        super().__init__(OvsBridge(ovsdb, dependencies), store, clock, on_step=on_step)
