"""The Network reconciler: a libvirt network as its manifest says, and kept so.

Compared are only the fields the manifest sets (intent only): a manifest that adopts the
host's NAT network ``default`` just to switch it off (``active: false, autostart: false``)
leaves its addressing alone. Static DHCP hosts change live through ``virNetworkUpdate``
(dnsmasq is told; nothing restarts). Any other change rewrites the definition and, for a
running network, restarts it; the plan says so, because guests attached to it lose their
link until they are restarted or re-plugged.

Ownership is the same stamp as for domains, in the network's ``<metadata>``; an adopted
network gets it by a redefinition of its own XML with only the stamp added
(reconcilers/adoption.py).

Deletion waits while a managed domain still uses the network (``Synced=False``,
reason ``InUse``, naming the domains), and is retried when they are gone.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from typing import Any

from kvmrec.api.kinds import ADOPT_ANNOTATION, DeletionPolicy, NetworkSpec, ObjectKey
from kvmrec.backends import domain_xml, network_xml, protocols
from kvmrec.backends.errors import BackendError
from kvmrec.backends.libvirt.live import LiveNetwork
from kvmrec.backends.network_xml import NetworkConfig
from kvmrec.engine.clock import Clock
from kvmrec.engine.workers import PermanentError, Result
from kvmrec.reconcilers import adoption, recording
from kvmrec.reconcilers.dependencies import (
    DEPENDENCY_RETRY,
    IN_USE_RETRY,
    Dependencies,
    deletion_plan,
    network_refs,
)
from kvmrec.reconcilers.plans import Plan, Step
from kvmrec.store.base import Store
from kvmrec.store.records import Drift, Status, StoredObject

KIND = "Network"


def diff_config(spec: NetworkSpec, config: NetworkConfig) -> list[Drift]:
    """The fields the manifest sets that the network has otherwise."""
    drift: list[Drift] = []

    def check(field: str, desired: Any, actual: Any) -> None:
        if desired is not None and desired != actual:
            drift.append(Drift(field, desired, actual))

    check("spec.forward", spec.forward, config.forward)
    check("spec.bridge", spec.bridge, config.bridge)
    if spec.forward == "bridge" or spec.virtualport is not None:
        check("spec.virtualport", spec.virtualport or "", config.virtualport or "")
    if spec.address is not None:
        check("spec.ip.address", spec.address, config.address)
        check("spec.ip.prefix", spec.prefix, config.prefix)
        desired_range = [spec.dhcp_start, spec.dhcp_end] if spec.dhcp_start else None
        actual_range = [config.dhcp_start, config.dhcp_end] if config.dhcp_start else None
        if desired_range != actual_range:
            drift.append(Drift("spec.ip.dhcp", desired_range, actual_range))
    return drift


def _hosts(hosts: Any) -> list[dict[str, Any]]:
    return [{k: v for k, v in (("mac", h.mac), ("ip", h.ip), ("name", h.name)) if v} for h in hosts]


def diff_hosts(spec: NetworkSpec, config: NetworkConfig) -> Drift | None:
    if spec.address is None or spec.dhcp_start is None:
        return None
    if sorted(spec.dhcp_hosts, key=str) == sorted(config.dhcp_hosts, key=str):
        return None
    return Drift("spec.ip.dhcp.hosts", _hosts(spec.dhcp_hosts), _hosts(config.dhcp_hosts))


class NetworkReconciler:
    kind = KIND

    def __init__(
        self, store: Store, hypervisor: protocols.Networks, clock: Clock, dependencies: Dependencies
    ) -> None:
        self._store = store
        self._hv = hypervisor
        self._clock = clock
        self._deps = dependencies

    # -- decide --------------------------------------------------------------------------

    def plan(self, obj: StoredObject, status: Status | None = None) -> Plan:
        live = self._hv.get_network(obj.key.name)
        if obj.deleting:
            return self._deletion_plan(obj, live)
        return self._decide(obj, NetworkSpec.from_spec(obj.spec), live)

    def _owns(self, live: LiveNetwork, obj: StoredObject) -> bool:
        if adoption.stamped_for(live.config.owner, KIND, obj.key.name):
            return True
        return obj.annotations.get(ADOPT_ANNOTATION) == "true"

    def _decide(self, obj: StoredObject, spec: NetworkSpec, live: LiveNetwork | None) -> Plan:
        name = obj.key.name
        owner = _owner(obj, live)
        if live is not None and not self._owns(live, obj):
            message = (
                f"a network named {name} exists and is not managed by kvmrec; it is left "
                f'alone (annotate the manifest with {ADOPT_ANNOTATION}: "true" to adopt it)'
            )
            return Plan(
                steps=(Step("conflict", detail=message),),
                blocked=message,
                blocked_reason="Conflict",
            )
        steps: list[Step] = []
        if live is None:
            if spec.forward is None:
                return Plan(
                    blocked=f"network {name} does not exist and spec.forward is needed to "
                    "create it",
                    blocked_reason="Incomplete",
                )
            steps.append(Step("create", detail=f"define network {name}"))
            active, autostart = False, False
        else:
            active, autostart = live.active, live.autostart
            adopting = not adoption.stamped_for(live.config.owner, KIND, name)
            if adopting:
                steps.append(adoption.step("network", name, _REMOVAL, spec.deletion_policy))
            drift = diff_config(spec, live.config)
            if drift:
                steps.append(Step("update", tuple(drift), "write the definition"))
                if live.active:
                    steps.append(
                        Step(
                            "restart",
                            tuple(drift),
                            "the network restarts; guests on it lose their link until they restart",
                        )
                    )
                    active = False  # the restart starts it again if asked
            hosts = diff_hosts(spec, live.config)
            if hosts is not None:
                steps.append(
                    Step("update-live", (hosts,), "virNetworkUpdate: dnsmasq is told, no restart")
                )
            if not drift and not adopting and live.config.owner != owner:
                steps.append(Step("stamp", visible=False))
        if spec.autostart != autostart:
            steps.append(Step("autostart", (Drift("spec.autostart", spec.autostart, autostart),)))
        if spec.active and not active and not any(s.action == "restart" for s in steps):
            steps.append(Step("start", (Drift("spec.active", True, False),)))
        elif not spec.active and active:
            steps.append(Step("stop", (Drift("spec.active", False, True),)))
        return Plan(steps=tuple(steps))

    # -- act -----------------------------------------------------------------------------

    def reconcile(self, key: ObjectKey) -> Result:
        obj = self._store.get(key)
        if obj is None:
            return Result()
        old = self._store.get_status(key)
        status = old or Status()
        with recording.failures_recorded(
            self._store, key, old, self._clock.wall(), unavailable="LibvirtUnavailable"
        ):
            if obj.deleting:
                return self._delete(obj, old, status)
            return self._converge(obj, old, status)

    def _converge(self, obj: StoredObject, old: Status | None, status: Status) -> Result:
        key, name = obj.key, obj.key.name
        spec = NetworkSpec.from_spec(obj.spec)
        live = self._hv.get_network(name)
        plan = self._decide(obj, spec, live)
        now = self._clock.wall()
        if plan.blocked is not None:
            status = recording.blocked(status, plan.blocked_reason, plan.blocked, now)
            recording.commit(self._store, key, old, status, now)
            raise PermanentError(plan.blocked)

        owner = _owner(obj, live)
        events: list[tuple[str, str, str]] = []
        for step in plan.steps:
            message = self._act(name, spec, owner, live, step)
            if message:
                events.append(("Normal", _EVENT_REASONS[step.action], message))
        if plan.steps:
            live = self._hv.get_network(name)
            if live is None:
                raise BackendError(f"network {name} vanished while it was being converged")
        assert live is not None

        drift = diff_config(spec, live.config)
        hosts = diff_hosts(spec, live.config)
        if hosts is not None:
            drift.append(hosts)
        if live.autostart != spec.autostart:
            drift.append(Drift("spec.autostart", spec.autostart, live.autostart))
        if live.active != spec.active:
            drift.append(Drift("spec.active", spec.active, live.active))
        ready = live.active == spec.active
        reason = ("Active" if live.active else "Inactive") if ready else "NotConverged"
        message = ""
        # A network that forwards to a bridge is of no use to guests until the bridge is there.
        unmet = self._deps.unmet(network_refs(spec)) if spec.active else []
        if unmet:
            ready, reason, message = False, "WaitingForDependency", "; ".join(unmet)
        status = status.with_condition("Ready", "True" if ready else "False", reason, message, now)
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
                "state": "active" if live.active else "inactive",
                "bridge": live.running.bridge if live.running else live.config.bridge,
            },
        )
        recording.commit(self._store, key, old, status, now, events)
        return Result(requeue_after=DEPENDENCY_RETRY if unmet else None)

    def _act(
        self,
        name: str,
        spec: NetworkSpec,
        owner: domain_xml.Owner,
        live: LiveNetwork | None,
        step: Step,
    ) -> str:
        match step.action:
            case "create" | "update":
                uuid = live.config.uuid if live is not None else None  # an adopted one's own
                xml = network_xml.build(name, _complete(spec, live), owner, uuid=uuid)
                self._hv.define_network(xml)
                if step.action == "create":
                    return f"defined network {name}"
                return "redefined: " + ", ".join(d.field for d in step.fields)
            case "restart":
                self._hv.stop_network(name)
                if spec.active:
                    self._hv.start_network(name)
                return "restarted to apply " + ", ".join(d.field for d in step.fields)
            case "update-live":
                assert live is not None
                self._update_hosts(name, spec, live)
                return "DHCP hosts updated live"
            case "adopt" | "stamp":
                assert live is not None
                self._hv.define_network(_stamped(self._hv.network_xml(name), owner))
                if step.action == "stamp":
                    return ""
                return adoption.adopted_event("network", name, spec.deletion_policy)
            case "autostart":
                self._hv.set_network_autostart(name, spec.autostart)
                return f"autostart {step.fields[0].actual} -> {spec.autostart}"
            case "start":
                self._hv.start_network(name)
                return f"started network {name}"
            case "stop":
                self._hv.stop_network(name)
                return f"stopped network {name}"
        raise AssertionError(f"unknown step {step.action}")

    def _update_hosts(self, name: str, spec: NetworkSpec, live: LiveNetwork) -> None:
        have = set(live.config.dhcp_hosts)
        wanted = set(spec.dhcp_hosts)
        for host in sorted(have - wanted, key=str):
            self._hv.update_dhcp_host(name, network_xml.host_xml(host), add=False, live=live.active)
        for host in sorted(wanted - have, key=str):
            self._hv.update_dhcp_host(name, network_xml.host_xml(host), add=True, live=live.active)

    # -- deletion ------------------------------------------------------------------------

    def _deletion_plan(self, obj: StoredObject, live: LiveNetwork | None) -> Plan:
        owner = live.config.owner if live is not None else None
        delete = _REMOVAL
        if owner is not None and owner.adopted:
            delete = adoption.deletion("network", obj.key.name, _REMOVAL)
        return deletion_plan(
            obj,
            exists=live is not None,
            # Only the stamp makes a network kvmrec's to delete (reconcilers/adoption.py).
            owned=adoption.stamped_for(owner, KIND, obj.key.name),
            holders=self._deps.holders(obj.key),
            orphan=NetworkSpec.from_spec(obj.spec).deletion_policy is DeletionPolicy.ORPHAN,
            delete=delete,
        )

    def _delete(self, obj: StoredObject, old: Status | None, status: Status) -> Result:
        key, name = obj.key, obj.key.name
        live = self._hv.get_network(name)
        plan = self._deletion_plan(obj, live)
        now = self._clock.wall()
        if plan.blocked is not None:
            status = recording.deletion_held(status, plan.blocked_reason, plan.blocked, now)
            recording.commit(self._store, key, old, status, now)
            return Result(requeue_after=IN_USE_RETRY)
        action = plan.steps[0].action if plan.steps else "gone"
        if action == "orphan":
            self._hv.define_network(_stamped(self._hv.network_xml(name), None))
            self._store.add_event(key, "Normal", "Orphaned", f"unstamped network {name}", now)
        elif action == "delete":
            self._hv.stop_network(name)
            self._hv.undefine_network(name)
            message = f"stopped and undefined {name}"
            if live is not None and live.config.owner is not None and live.config.owner.adopted:
                message += ", which kvmrec adopted and did not create"
            self._store.add_event(key, "Normal", "Deleted", message, now)
        elif action == "forget":
            self._store.add_event(key, "Warning", "NotOwned", f"network {name} left alone", now)
        self._store.remove(key)
        return Result()


# What deletionPolicy Delete does to a network.
_REMOVAL = "stop and undefine"


def _owner(obj: StoredObject, live: LiveNetwork | None) -> domain_xml.Owner:
    """The stamp the network of ``obj`` gets; an adoption is kept in it."""
    taken = live is not None and adoption.adopted(live.config.owner, KIND, obj.key.name)
    return domain_xml.Owner(KIND, obj.key.name, obj.uid, obj.generation, obj.digest, taken)


def _complete(spec: NetworkSpec, live: LiveNetwork | None) -> NetworkSpec:
    """The spec, with what it leaves unsaid taken from the network as it is."""
    if live is None:
        return spec
    config = live.config
    return replace(
        spec,
        forward=spec.forward or config.forward,
        bridge=spec.bridge or config.bridge,
        virtualport=spec.virtualport or config.virtualport,
        address=spec.address or config.address,
        prefix=spec.prefix if spec.address else (config.prefix or spec.prefix),
        dhcp_start=spec.dhcp_start if spec.address else config.dhcp_start,
        dhcp_end=spec.dhcp_end if spec.address else config.dhcp_end,
        dhcp_hosts=spec.dhcp_hosts if spec.address else config.dhcp_hosts,
    )


def _stamped(xml: str, owner: domain_xml.Owner | None) -> str:
    """A network's own definition with kvmrec's stamp set (or removed, with None)."""
    root = ET.fromstring(xml)
    metadata = root.find("metadata")
    if metadata is None:
        metadata = ET.Element("metadata")
        root.insert(2, metadata)
    for element in metadata.findall(f"{{{domain_xml.OWNER_NS}}}owner"):
        metadata.remove(element)
    if owner is not None:
        metadata.append(domain_xml.owner_element(owner))
    elif not len(metadata):
        root.remove(metadata)
    return ET.tostring(root, encoding="unicode")


_EVENT_REASONS = {
    "create": "Created",
    "update": "Redefined",
    "restart": "Restarted",
    "update-live": "UpdatedLive",
    "adopt": "Adopted",
    "stamp": "Stamped",
    "autostart": "Autostart",
    "start": "Started",
    "stop": "Stopped",
}
