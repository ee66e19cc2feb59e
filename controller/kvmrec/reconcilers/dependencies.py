"""Dependencies between objects: a domain needs its networks and bridges first.

A Domain interface names a libvirt network or a bridge. If kvmrec manages that object
(a Network or OvsBridge manifest), the domain waits until it is Ready; if not, it waits
until the network runs or the bridge device exists on the host. Waiting is not an error:
the domain shows ``Ready=False, reason=WaitingForDependency`` naming what it waits for,
and the service queues it again the moment the dependency turns Ready.

Deletion runs the other way: a Network or OvsBridge that a managed domain still uses is
not removed; its condition says which domains hold it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kvmrec.api.kinds import DomainSpec, NetworkSpec, ObjectKey
from kvmrec.store.base import Store
from kvmrec.store.records import StoredObject

NETWORK = "Network"
OVS_BRIDGE = "OvsBridge"
BRIDGE = "Bridge"  # a plain Linux bridge: never managed, only required to exist
HOST_NIC = "HostNic"  # the host NIC of a direct (macvtap) interface: never managed
PCI_DEVICE = "PciDevice"  # the SR-IOV VF of a hostdev interface: never managed
_HOST_DEVICES = (HOST_NIC, PCI_DEVICE)

# What waits for a dependency is queued again the moment a managed one turns Ready; this
# retry covers those kvmrec does not manage (no event says they appeared).
DEPENDENCY_RETRY = 10.0
# A deletion held by its users is queued again when they go; this retry is a net.
IN_USE_RETRY = 10.0


@dataclass(frozen=True)
class Ref:
    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def manageable(self) -> bool:
        """Whether an object of kvmrec's may stand for it (not a host NIC, not a VF)."""
        return self.kind not in _HOST_DEVICES

    @property
    def managed(self) -> ObjectKey:
        """The key of the object that would manage it (a plain bridge: an OvsBridge)."""
        return ObjectKey(OVS_BRIDGE if self.kind == BRIDGE else self.kind, self.name)


def domain_refs(spec: DomainSpec) -> list[Ref]:
    refs: list[Ref] = []
    for iface in spec.interfaces:
        if iface.network:
            ref = Ref(NETWORK, iface.network)
        elif iface.dev:
            ref = Ref(HOST_NIC, iface.dev)
        elif iface.address:
            ref = Ref(PCI_DEVICE, iface.address)
        elif iface.virtualport == "openvswitch":
            ref = Ref(OVS_BRIDGE, iface.bridge or "")
        else:
            ref = Ref(BRIDGE, iface.bridge or "")
        if ref not in refs:
            refs.append(ref)
    return refs


def network_refs(spec: NetworkSpec) -> list[Ref]:
    """A network that forwards to a bridge needs the bridge."""
    if spec.forward != "bridge" or not spec.bridge:
        return []
    return [Ref(OVS_BRIDGE if spec.virtualport == "openvswitch" else BRIDGE, spec.bridge)]


def refs_of(obj: StoredObject) -> list[Ref]:
    if obj.key.kind == "Domain":
        return domain_refs(DomainSpec.from_spec(obj.spec, obj.key.name))
    if obj.key.kind == NETWORK:
        return network_refs(NetworkSpec.from_spec(obj.spec))
    return []


class Dependencies:
    """Answers "is it there yet?" for the objects a domain names."""

    def __init__(
        self,
        store: Store,
        network_active: Callable[[str], bool | None],
        device_exists: Callable[[str], bool],
        pci_device_exists: Callable[[str], bool] = lambda _address: True,
    ) -> None:
        """``device_exists``: whether a network device (a bridge, a host NIC) is there;
        ``pci_device_exists``: whether the host has a PCI device at an address."""
        self._store = store
        self._network_active = network_active
        self._device_exists = device_exists
        self._pci_device_exists = pci_device_exists

    def unmet(self, refs: Iterable[Ref]) -> list[str]:
        """What is missing, one message per dependency; empty when all are there."""
        missing: list[str] = []
        for ref in refs:
            if ref.kind == HOST_NIC:
                if not self._device_exists(ref.name):
                    missing.append(f"host NIC {ref.name} does not exist")
                continue
            if ref.kind == PCI_DEVICE:
                if not self._pci_device_exists(ref.name):
                    missing.append(f"PCI device {ref.name} does not exist on this host")
                continue
            obj = self._store.get(ref.managed)
            if obj is not None and not obj.deleting:
                status = self._store.get_status(obj.key)
                if status is None or not status.is_true("Ready"):
                    ready = status.condition("Ready") if status else None
                    why = f" ({ready.reason})" if ready else ""
                    missing.append(f"{obj.key} is not Ready{why}")
                continue
            if ref.kind == NETWORK:
                active = self._network_active(ref.name)
                if active is None:
                    missing.append(f"network {ref.name} does not exist")
                elif not active:
                    missing.append(f"network {ref.name} is not active")
            elif not self._device_exists(ref.name):
                missing.append(f"bridge {ref.name} does not exist")
        return missing

    def holders(self, key: ObjectKey) -> list[ObjectKey]:
        """The managed domains (and networks) that use the Network or OvsBridge ``key``."""
        wanted = {Ref(key.kind, key.name)}
        if key.kind == OVS_BRIDGE:
            wanted.add(Ref(BRIDGE, key.name))
        users = [*self._store.list("Domain"), *self._store.list(NETWORK)]
        return [obj.key for obj in users if wanted & set(refs_of(obj))]
