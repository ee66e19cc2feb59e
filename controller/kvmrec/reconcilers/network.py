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
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, ClassVar

from kvmrec.api.kinds import DeletionPolicy, NetworkSpec, ObjectKey
from kvmrec.backends import domain_xml, network_xml, protocols
from kvmrec.backends.libvirt.live import LiveNetwork
from kvmrec.backends.network_xml import NetworkConfig
from kvmrec.engine.clock import Clock
from kvmrec.reconcilers import adoption
from kvmrec.reconcilers.dependencies import DEPENDENCY_RETRY, Dependencies, network_refs
from kvmrec.reconcilers.kind import Report, StampedKind, Turn
from kvmrec.reconcilers.plans import Plan, Step
from kvmrec.reconcilers.reconciling import Reconciler
from kvmrec.store.base import Store
from kvmrec.store.records import Drift, StoredObject

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


class Network(StampedKind[NetworkSpec, LiveNetwork]):
    """The Network kind: its own parse, observe, decide, act and report."""

    kind = KIND
    noun = "network"
    dependency = True
    events = "network"
    events_of_unmanaged = True
    removal = "stop and undefine"
    reasons: ClassVar[Mapping[str, str]] = {
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

    def __init__(self, hypervisor: protocols.Networks, dependencies: Dependencies | None) -> None:
        super().__init__(dependencies)
        self._hv = hypervisor

    def parse(self, obj: StoredObject) -> NetworkSpec:
        return NetworkSpec.from_spec(obj.spec)

    def observe(self, obj: StoredObject, spec: NetworkSpec) -> LiveNetwork | None:
        return self._hv.get_network(obj.key.name)

    def stamped(self, turn: Turn[NetworkSpec, LiveNetwork]) -> bool:
        live = turn.live
        return live is not None and adoption.stamped_for(live.config.owner, KIND, turn.name)

    def adopted(self, turn: Turn[NetworkSpec, LiveNetwork]) -> bool:
        owner = turn.live.config.owner if turn.live is not None else None
        return owner is not None and owner.adopted

    def deletion_policy(self, spec: NetworkSpec) -> DeletionPolicy:
        return spec.deletion_policy

    # -- decide --------------------------------------------------------------------------

    def decide(self, turn: Turn[NetworkSpec, LiveNetwork]) -> Plan:
        obj, spec, live, name = turn.obj, turn.spec, turn.live, turn.name
        owner = _owner(obj, live)
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
            adopting = not self.stamped(turn)
            if adopting:
                steps.append(adoption.step("network", name, self.removal, spec.deletion_policy))
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

    def act(self, turn: Turn[NetworkSpec, LiveNetwork], step: Step) -> str:
        spec, live, name = turn.spec, turn.live, turn.name
        match step.action:
            case "create" | "update":
                uuid = live.config.uuid if live is not None else None  # an adopted one's own
                owner = _owner(turn.obj, live)
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
                owner = _owner(turn.obj, live)
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
            case "orphan":
                self._hv.define_network(_stamped(self._hv.network_xml(name), None))
                return f"unstamped network {name}"
            case "delete":
                self._hv.stop_network(name)
                self._hv.undefine_network(name)
                message = f"stopped and undefined {name}"
                if self.adopted(turn):
                    message += ", which kvmrec adopted and did not create"
                return message
        raise AssertionError(f"unknown step {step.action}")

    def _update_hosts(self, name: str, spec: NetworkSpec, live: LiveNetwork) -> None:
        have = set(live.config.dhcp_hosts)
        wanted = set(spec.dhcp_hosts)
        for host in sorted(have - wanted, key=str):
            self._hv.update_dhcp_host(name, network_xml.host_xml(host), add=False, live=live.active)
        for host in sorted(wanted - have, key=str):
            self._hv.update_dhcp_host(name, network_xml.host_xml(host), add=True, live=live.active)

    # -- report --------------------------------------------------------------------------

    def report(self, turn: Turn[NetworkSpec, LiveNetwork]) -> Report:
        spec, live = turn.spec, turn.live
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
        unmet = self._deps.unmet(network_refs(spec)) if spec.active and self._deps else []
        if unmet:
            ready, reason, message = False, "WaitingForDependency", "; ".join(unmet)
        return Report(
            ready,
            reason,
            message,
            drift=tuple(drift),
            details={
                "state": "active" if live.active else "inactive",
                "bridge": live.running.bridge if live.running else live.config.bridge,
            },
            requeue_after=DEPENDENCY_RETRY if unmet else None,
        )


class NetworkReconciler(Reconciler[NetworkSpec, LiveNetwork]):
    def __init__(
        self,
        store: Store,
        hypervisor: protocols.Networks,
        clock: Clock,
        dependencies: Dependencies | None,
        *,
        on_step: Callable[[ObjectKey, Step], None] | None = None,
    ) -> None:
        super().__init__(Network(hypervisor, dependencies), store, clock, on_step=on_step)


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
