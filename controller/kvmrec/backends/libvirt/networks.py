"""libvirt networks: read them back, define, start, stop, and change DHCP hosts live.

A network is read as a ``LiveNetwork`` (libvirt/live.py): its persistent definition parsed
by network_xml, whether it runs, its autostart flag, and what the running network has.
"""

from __future__ import annotations

import libvirt

from kvmrec.backends import network_xml
from kvmrec.backends.libvirt.connection import OnConnection
from kvmrec.backends.libvirt.live import LiveNetwork


class Networks(OnConnection):
    """The networks of one libvirt connection."""

    def get_network(self, name: str) -> LiveNetwork | None:
        with self._call(f"read network {name}") as conn:
            try:
                net = conn.networkLookupByName(name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                    return None
                raise
            xml = net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)
            active = net.isActive() == 1
            running_xml = net.XMLDesc(0) if active else None
            autostart = bool(net.autostart())
        return LiveNetwork(
            config=network_xml.parse(xml),
            active=active,
            autostart=autostart,
            running=network_xml.parse(running_xml) if running_xml else None,
        )

    def network_xml(self, name: str) -> str:
        """The persistent definition of a network, as libvirt has it."""
        with self._call(f"read network {name}") as conn:
            return str(conn.networkLookupByName(name).XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE))

    def network_active(self, name: str) -> bool | None:
        """Whether a network runs; None when there is no such network."""
        with self._call(f"read network {name}") as conn:
            try:
                return bool(conn.networkLookupByName(name).isActive())
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                    return None
                raise

    def define_network(self, xml: str) -> None:
        with self._call("define network") as conn:
            conn.networkDefineXML(xml)

    def start_network(self, name: str) -> None:
        with self._call(f"start network {name}") as conn:
            conn.networkLookupByName(name).create()

    def stop_network(self, name: str) -> None:
        with self._call(f"stop network {name}") as conn:
            net = conn.networkLookupByName(name)
            if net.isActive():
                net.destroy()

    def undefine_network(self, name: str) -> None:
        with self._call(f"undefine network {name}") as conn:
            conn.networkLookupByName(name).undefine()

    def set_network_autostart(self, name: str, enabled: bool) -> None:
        with self._call(f"set autostart of network {name}") as conn:
            conn.networkLookupByName(name).setAutostart(1 if enabled else 0)

    def update_dhcp_host(self, name: str, host_xml: str, *, add: bool, live: bool) -> None:
        """Add or remove one static DHCP lease, live too when the network runs
        (``virNetworkUpdate``: dnsmasq is told, nothing restarts)."""
        command = (
            libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST
            if add
            else libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE
        )
        flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
        if live:
            flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
        with self._call(f"update DHCP hosts of network {name}") as conn:
            conn.networkLookupByName(name).update(
                command, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, host_xml, flags
            )
