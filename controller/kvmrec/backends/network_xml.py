"""Network model <-> libvirt network XML.

As for domains, ``build`` writes the whole definition with kvmrec's stamp in
``<metadata>``, and ``parse`` reads back only the fields a Network manifest holds: the
UUID, the bridge's MAC and STP settings and the NAT port range libvirt adds never count
as drift. libvirt keeps an address's prefix as written; one written as a netmask by
someone else is converted, so both spellings compare equal.
"""

from __future__ import annotations

import ipaddress
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from kvmrec.api.kinds import DhcpHost, NetworkSpec
from kvmrec.backends.domain_xml import OWNER_NS, Owner, owner_element, read_owner

_UUID_NS = uuid.UUID("0c8d5f0e-5f55-4b0e-9b7e-3f1f1b7d9a01")


@dataclass(frozen=True)
class NetworkConfig:
    name: str
    forward: str
    bridge: str | None
    virtualport: str | None
    address: str | None
    prefix: int | None
    dhcp_start: str | None
    dhcp_end: str | None
    dhcp_hosts: tuple[DhcpHost, ...]
    owner: Owner | None
    uuid: str = ""


def stable_uuid(name: str) -> str:
    return str(uuid.uuid5(_UUID_NS, f"Network/{name}"))


def host_xml(host: DhcpHost) -> str:
    """One static lease, as ``virNetworkUpdate`` wants it."""
    return ET.tostring(_host_element(host), encoding="unicode")


def _host_element(host: DhcpHost) -> ET.Element:
    attrs = {"mac": host.mac, "ip": host.ip}
    if host.name:
        attrs["name"] = host.name
    return ET.Element("host", attrs)


def build(name: str, spec: NetworkSpec, owner: Owner | None, *, uuid: str | None = None) -> str:
    """``uuid``: the one an existing network has (libvirt refuses to redefine a network
    under another); a new one gets ``stable_uuid``."""
    root = ET.Element("network")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "uuid").text = uuid or stable_uuid(name)
    if owner is not None:
        ET.SubElement(root, "metadata").append(owner_element(owner))
    if spec.forward not in (None, "isolated"):
        ET.SubElement(root, "forward", {"mode": spec.forward})
    if spec.bridge:
        ET.SubElement(root, "bridge", {"name": spec.bridge})
    if spec.virtualport:
        ET.SubElement(root, "virtualport", {"type": spec.virtualport})
    if spec.address:
        ip = ET.SubElement(root, "ip", {"address": spec.address, "prefix": str(spec.prefix)})
        if spec.dhcp_start and spec.dhcp_end:
            dhcp = ET.SubElement(ip, "dhcp")
            ET.SubElement(dhcp, "range", {"start": spec.dhcp_start, "end": spec.dhcp_end})
            for host in spec.dhcp_hosts:
                dhcp.append(_host_element(host))
    return ET.tostring(root, encoding="unicode")


def parse(xml: str) -> NetworkConfig:
    root = ET.fromstring(xml)
    forward = root.find("forward")
    bridge = root.find("bridge")
    virtualport = root.find("virtualport")
    ip = next((e for e in root.findall("ip") if e.get("family", "ipv4") == "ipv4"), None)
    address = prefix = start = end = None
    hosts: list[DhcpHost] = []
    if ip is not None:
        address = ip.get("address")
        if ip.get("prefix"):
            prefix = int(ip.get("prefix", "24"))
        elif ip.get("netmask"):
            prefix = ipaddress.IPv4Network(f"0.0.0.0/{ip.get('netmask')}").prefixlen
        dhcp_range = ip.find("dhcp/range")
        if dhcp_range is not None:
            start, end = dhcp_range.get("start"), dhcp_range.get("end")
        hosts = [
            DhcpHost(mac=h.get("mac", "").lower(), ip=h.get("ip", ""), name=h.get("name"))
            for h in ip.findall("dhcp/host")
        ]
    return NetworkConfig(
        name=root.findtext("name", ""),
        forward=forward.get("mode", "nat") if forward is not None else "isolated",
        bridge=bridge.get("name") if bridge is not None else None,
        virtualport=virtualport.get("type") if virtualport is not None else None,
        address=address,
        prefix=prefix,
        dhcp_start=start,
        dhcp_end=end,
        dhcp_hosts=tuple(hosts),
        owner=read_owner(root),
        uuid=root.findtext("uuid", ""),
    )


__all__ = ["OWNER_NS", "NetworkConfig", "build", "host_xml", "parse", "stable_uuid"]
