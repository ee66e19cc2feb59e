"""Domains through libvirt: read them back, define, start, stop, change them live.

A domain is read as a ``LiveDomain`` (libvirt/live.py): its persistent definition parsed
by domain_xml, its state with the reason as a word, whether libvirt runs a job on it, and a
fingerprint that ``fingerprints`` lists for every domain at once, cheaply, for the fast
resync.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import Any

import libvirt

from kvmrec.backends import domain_xml
from kvmrec.backends.domain_xml import Owner
from kvmrec.backends.libvirt import echoes, names
from kvmrec.backends.libvirt.connection import OnConnection
from kvmrec.backends.libvirt.live import Fingerprint, LiveDomain

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",  # blocked on I/O is still running
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",  # being shut down
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}
_ACTIVE = {
    libvirt.VIR_DOMAIN_RUNNING: True,
    libvirt.VIR_DOMAIN_BLOCKED: True,
    libvirt.VIR_DOMAIN_PAUSED: True,
    libvirt.VIR_DOMAIN_SHUTDOWN: True,
    libvirt.VIR_DOMAIN_PMSUSPENDED: True,
    libvirt.VIR_DOMAIN_SHUTOFF: False,
}
# virDomainGetControlInfo: libvirt is running a job on the domain (a snapshot, a revert, a
# save, a migration), or a command of one in QEMU's monitor.
_CONTROL_BUSY = names.codes("VIR_DOMAIN_CONTROL_JOB", "VIR_DOMAIN_CONTROL_OCCUPIED")


class Domains(OnConnection):
    """The domains of one libvirt connection."""

    # (connection, its capabilities XML, the answers given from it by domain type)
    _capabilities: tuple[Any, str, dict[str, bool]] | None = None

    def get_domain(self, name: str) -> LiveDomain | None:
        with self._call(f"read domain {name}") as conn:
            try:
                dom = conn.lookupByName(name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return None
                raise
            xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            code, reason = dom.state()
            autostart = bool(dom.autostart())
            # The state tells for all but a crash (a crashed guest may be kept or gone).
            active = _ACTIVE.get(code)
            if active is None:
                active = dom.isActive() == 1
            running_xml = dom.XMLDesc(0) if active else None
            busy = active and _busy(dom)
        paused = code == libvirt.VIR_DOMAIN_PAUSED
        return LiveDomain(
            config=domain_xml.parse(xml),
            state=_STATES.get(code, "nostate"),
            reason=names.reason_word(code, reason),
            autostart=autostart,
            fingerprint=(running_xml or xml, paused, autostart),
            running=domain_xml.parse(running_xml) if running_xml else None,
            busy=busy,
        )

    def domain_xml(self, name: str) -> str:
        """The persistent definition of a domain, as libvirt has it."""
        with self._call(f"read domain {name}") as conn:
            return str(conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))

    def fingerprints(self) -> Mapping[str, Fingerprint]:
        """Every domain's fingerprint, cheaply: one XML read per domain, as a plain
        listing loop would do, and two short lists."""
        with self._call("list domains") as conn:
            domains = conn.listAllDomains(0)
            paused = {
                d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_PAUSED)
            }
            auto = {
                d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART)
            }
            result: dict[str, Fingerprint] = {}
            for dom in domains:
                name = dom.name()
                try:
                    xml = dom.XMLDesc(0)
                except libvirt.libvirtError:
                    continue  # undefined meanwhile: its event enqueues it
                result[name] = (xml, name in paused, name in auto)
            return result

    def define_domain(self, xml: str) -> None:
        name = _name_of(xml)
        if name is not None:
            self.connection.echoes.expect(name, echoes.DEFINED)
        try:
            with self._call("define domain") as conn:
                conn.defineXML(xml)
        except BaseException:
            if name is not None:
                self.connection.echoes.withdraw(name, echoes.DEFINED)
            raise

    def start_domain(self, name: str) -> bool:
        """Start the domain; False when it was already running by then: seen shut off in
        the midst of a libvirt job that starts it again (a revert restarts QEMU)."""
        self.connection.echoes.expect(name, echoes.STARTED)
        try:
            with self._call(f"start domain {name}") as conn:
                dom = conn.lookupByName(name)
                try:
                    dom.create()
                except libvirt.libvirtError:
                    if dom.isActive() == 1:
                        self.connection.echoes.withdraw(name, echoes.STARTED)
                        return False
                    raise
        except BaseException:
            self.connection.echoes.withdraw(name, echoes.STARTED)
            raise
        return True

    def resume_domain(self, name: str) -> None:
        with self._call(f"resume domain {name}") as conn:
            dom = conn.lookupByName(name)
            try:
                dom.resume()
            except libvirt.libvirtError:
                # Observed paused while libvirt was still starting it (a create that
                # outlived a killed kvmrec): running by now is what resume wanted.
                if dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING:
                    raise

    def destroy_domain(self, name: str) -> None:
        with self._call(f"destroy domain {name}") as conn:
            dom = conn.lookupByName(name)
            if dom.isActive():
                dom.destroy()

    def undefine_domain(self, name: str) -> None:
        """Undefine, with snapshot metadata (libvirt refuses otherwise) and NVRAM; disk
        images are never touched."""
        flags = (
            libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
        )
        with self._call(f"undefine domain {name}") as conn:
            dom = conn.lookupByName(name)
            try:
                dom.undefineFlags(flags)
            except libvirt.libvirtError as exc:
                # Drivers without the flags (the test driver has no NVRAM flag) refuse
                # them with VIR_ERR_INVALID_ARG ("unsupported flags"), others NO_SUPPORT.
                if exc.get_error_code() not in (
                    libvirt.VIR_ERR_NO_SUPPORT,
                    libvirt.VIR_ERR_INVALID_ARG,
                ):
                    raise
                dom.undefine()

    def set_autostart(self, name: str, enabled: bool) -> None:
        with self._call(f"set autostart of {name}") as conn:
            conn.lookupByName(name).setAutostart(1 if enabled else 0)

    def set_owner(self, name: str, owner: Owner | None) -> None:
        """Stamp (or unstamp, with None) the persistent definition of a domain."""
        with self._call(f"set owner of {name}") as conn:
            dom = conn.lookupByName(name)
            xml = domain_xml.owner_xml(owner) if owner else None
            dom.setMetadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                xml,
                domain_xml.OWNER_PREFIX if owner else None,
                domain_xml.OWNER_NS,
                libvirt.VIR_DOMAIN_AFFECT_CONFIG,
            )

    def domain_type_supported(self, virt_type: str) -> bool:
        """Whether the host can run ``virt_type`` guests (read once per connection)."""
        with self._call("read capabilities") as conn:
            if self._capabilities is None or self._capabilities[0] is not conn:
                self._capabilities = (conn, conn.getCapabilities(), {})
            _, caps, answers = self._capabilities
            if virt_type not in answers:
                # libvirt's test driver advertises only type 'test' but runs any definition.
                answers[virt_type] = (
                    f"<domain type='{virt_type}'" in caps or "<domain type='test'" in caps
                )
            return answers[virt_type]

    # -- changes to a running guest ------------------------------------------------------

    def set_vcpus_live(self, name: str, count: int) -> None:
        with self._call(f"set vCPUs of {name}") as conn:
            conn.lookupByName(name).setVcpusFlags(count, libvirt.VIR_DOMAIN_AFFECT_LIVE)

    def set_memory_live(self, name: str, kib: int) -> None:
        with self._call(f"set memory of {name}") as conn:
            conn.lookupByName(name).setMemoryFlags(kib, libvirt.VIR_DOMAIN_AFFECT_LIVE)

    def attach_live(self, name: str, device_xml: str) -> None:
        with self._call(f"hot-plug a device into {name}") as conn:
            conn.lookupByName(name).attachDeviceFlags(device_xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)

    def detach_live(self, name: str, device_xml: str) -> None:
        with self._call(f"unplug a device from {name}") as conn:
            conn.lookupByName(name).detachDeviceFlags(device_xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)

    def block_size(self, name: str, dev: str) -> int:
        """Capacity in bytes of a running guest's disk ``dev`` (e.g. vda)."""
        with self._call(f"read disk {dev} of {name}") as conn:
            return int(conn.lookupByName(name).blockInfo(dev)[0])

    def block_resize(self, name: str, dev: str, size: int) -> None:
        """Grow a disk of a running guest (the guest sees the new size at once)."""
        with self._call(f"grow disk {dev} of {name}") as conn:
            conn.lookupByName(name).blockResize(dev, size, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)


def _busy(dom: Any) -> bool:
    try:
        return dom.controlInfo()[0] in _CONTROL_BUSY
    except libvirt.libvirtError:
        return False  # stopped meanwhile, or a driver without control info


_NAME = re.compile(r"<name>([^<]*)</name>")


def _name_of(xml: str) -> str | None:
    """The domain's name in a definition: its first ``<name>`` (libvirt's own order)."""
    found = _NAME.search(xml)
    return html.unescape(found.group(1)) if found else None
