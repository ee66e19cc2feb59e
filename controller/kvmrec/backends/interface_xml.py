"""Interface model <-> libvirt ``<interface>`` XML, for the four attachments kvmrec knows.

``network`` and ``bridge`` (a Linux or Open vSwitch bridge) connect a tap device; ``direct``
is a macvtap device on a host NIC (``<source dev mode>``: bridge, vepa, private or
passthrough); ``hostdev`` passes an SR-IOV virtual function through by its PCI address,
libvirt setting the VF's MAC and VLAN on the physical function and binding it to vfio
(``managed='yes'``). ``parse`` reads back only what the model holds: the macvtap's name,
aliases and guest PCI addresses libvirt adds never count as drift.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from kvmrec.api.domain_parts import Interface

KNOWN_TYPES = ("network", "bridge", "direct", "hostdev")


def element(iface: Interface) -> ET.Element:
    kind = iface.type
    attrs = {"type": kind, **({"managed": "yes"} if kind == "hostdev" else {})}
    node = ET.Element("interface", attrs)
    ET.SubElement(node, "mac", {"address": iface.mac})
    if kind == "network":
        ET.SubElement(node, "source", {"network": iface.network or ""})
    elif kind == "direct":
        ET.SubElement(node, "source", {"dev": iface.dev or "", "mode": iface.mode or "bridge"})
    elif kind == "hostdev":
        source = ET.SubElement(node, "source")
        ET.SubElement(source, "address", {"type": "pci", **pci_parts(iface.address or "")})
    else:
        ET.SubElement(node, "source", {"bridge": iface.bridge or ""})
    if iface.virtualport:
        ET.SubElement(node, "virtualport", {"type": iface.virtualport})
    if iface.vlan is not None:
        vlan = ET.SubElement(node, "vlan")
        ET.SubElement(vlan, "tag", {"id": str(iface.vlan)})
    if iface.model:
        ET.SubElement(node, "model", {"type": iface.model})
    return node


def pci_parts(address: str) -> dict[str, str]:
    """``0000:03:10.2`` as libvirt's domain, bus, slot and function attributes."""
    domain, bus, rest = address.split(":")
    slot, function = rest.split(".")
    return {
        "domain": f"0x{domain}",
        "bus": f"0x{bus}",
        "slot": f"0x{slot}",
        "function": f"0x{function}",
    }


def pci_address(node: ET.Element) -> str | None:
    """A libvirt ``<address type='pci'>`` as ``0000:03:10.2``; None if it is not one."""
    if node.get("type", "pci") != "pci":
        return None
    try:
        parts = [int(node.get(k, "0"), 16) for k in ("domain", "bus", "slot", "function")]
    except ValueError:
        return None
    return f"{parts[0]:04x}:{parts[1]:02x}:{parts[2]:02x}.{parts[3]:x}"


def parse(node: ET.Element) -> Interface | None:
    kind = node.get("type")
    source = node.find("source")
    if kind not in KNOWN_TYPES or source is None:
        return None
    mac_node = node.find("mac")
    mac = mac_node.get("address", "") if mac_node is not None else ""
    model_node = node.find("model")
    model = model_node.get("type", "") if model_node is not None else ""
    if kind == "direct":
        return Interface(
            name="", mac=mac, dev=source.get("dev"), mode=source.get("mode", "vepa"), model=model
        )
    if kind == "hostdev":
        address = source.find("address")
        pci = pci_address(address) if address is not None else None
        tag = node.find("vlan/tag")
        vlan = int(tag.get("id", "0")) if tag is not None else None
        return Interface(name="", mac=mac, address=pci, vlan=vlan, model="")
    # A running guest's interface on a network that forwards to a bridge shows as
    # type='bridge' with the network still named in its source: it is a network interface,
    # and its virtualport is the network's business.
    network = source.get("network")
    virtualport = node.find("virtualport")
    return Interface(
        name="",
        mac=mac,
        network=network,
        bridge=None if network else source.get("bridge"),
        virtualport=virtualport.get("type") if virtualport is not None and not network else None,
        model=model,
    )
