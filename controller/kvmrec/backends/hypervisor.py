"""The libvirt connection: domain operations, lifecycle events, and surviving libvirtd.

One ``Hypervisor`` per service holds one connection, shared by all worker threads (libvirt
connections are thread-safe and release the GIL while waiting on the daemon).

Events: libvirt needs its default event loop registered before the first connection is
opened, and a thread to run it; ``_EventLoop`` does both once per process. Lifecycle
callbacks only hand the domain's name to ``on_domain_event`` (which enqueues a key); they
never do work on the event thread.

Reconnection: keepalive probes notice a dead daemon, the close callback drops the
connection, and a reconnect thread tries again with capped backoff. Calls made meanwhile
raise ``Unavailable`` at once. After a reconnect, events are registered again and
``on_reconnect`` lets the service relist everything, since events were lost while down.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape as xml_escape

import libvirt

from kvmrec.backends import domain_xml, libvirt_names, network_xml, snapshot_state
from kvmrec.backends.domain_xml import DomainConfig, Owner
from kvmrec.backends.errors import BackendError, NotFound, Unavailable
from kvmrec.backends.network_xml import NetworkConfig
from kvmrec.backends.snapshot_state import SnapshotInfo

log = logging.getLogger(__name__)

__all__ = [
    "BackendError",
    "Hypervisor",
    "LiveDomain",
    "LiveNetwork",
    "NotFound",
    "SnapshotInfo",
    "Unavailable",
]


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
# virDomainGetControlInfo: libvirt is running a job on the domain (a snapshot, a revert, a
# save, a migration), or a command of one in QEMU's monitor.
_CONTROL_BUSY = libvirt_names.codes("VIR_DOMAIN_CONTROL_JOB", "VIR_DOMAIN_CONTROL_OCCUPIED")
# Lifecycle (defined, started, stopped, undefined, ...) and devices added or removed by hand.
_WATCHED_EVENTS = (
    libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
    libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED,
    libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
    # The guest agent came up or went away: guest information can be read, or not.
    libvirt.VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE,
)
_CONNECTION_ERRORS = {libvirt.VIR_FROM_REMOTE, libvirt.VIR_FROM_RPC}
_NOT_FOUND = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT,
    libvirt.VIR_ERR_NO_STORAGE_POOL,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
    libvirt.VIR_ERR_NO_NETWORK,
}


@dataclass(frozen=True)
class LiveDomain:
    """A domain as libvirt has it."""

    config: DomainConfig  # the persistent definition
    state: str  # running | paused | shutoff | crashed | ...
    # Why it is in that state, as a word (backends/libvirt_names.py): for shutoff,
    # "shutdown" means the guest did it; for paused, "user" means someone asked.
    reason: str
    autostart: bool
    fingerprint: Fingerprint  # changes whenever any of the above does
    running: DomainConfig | None = None  # what the running guest was started with / has now
    busy: bool = False  # libvirt is running a job of its own on it (snapshot, revert, ...)

    @property
    def active(self) -> bool:
        return self.state not in ("shutoff", "crashed", "nostate")

    @property
    def paused_for_job(self) -> bool:
        """libvirt paused the guest for a job of its own, and resumes it when it ends."""
        return self.state == "paused" and self.reason in libvirt_names.JOB_PAUSES


@dataclass(frozen=True)
class LiveNetwork:
    """A libvirt network as libvirt has it."""

    config: NetworkConfig  # the persistent definition
    active: bool
    autostart: bool
    running: NetworkConfig | None = None  # what the running network has


# What a guest runs with (its live XML; for a stopped guest, its definition), whether it is
# paused, and its autostart flag. A definition edited while the guest runs does not show
# here, but raises a DEFINED event, and the periodic full resync catches the rest. Kept
# whole rather than hashed: comparing two equal strings is a memcmp, cheaper than hashing.
Fingerprint = tuple[str, bool, bool]


def _fingerprint(xml: str, paused: bool, autostart: bool) -> Fingerprint:
    return (xml, paused, autostart)


class _EventLoop:
    """libvirt's default event loop, registered once and run on a daemon thread."""

    _lock = threading.Lock()
    _started = False

    @classmethod
    def ensure(cls) -> None:
        with cls._lock:
            if cls._started:
                return
            # libvirt prints every error to stderr by default; they reach us as exceptions.
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
            libvirt.virEventRegisterDefaultImpl()
            thread = threading.Thread(target=cls._run, name="libvirt-events", daemon=True)
            thread.start()
            cls._started = True

    @staticmethod
    def _run() -> None:
        while True:
            libvirt.virEventRunDefaultImpl()


class Hypervisor:
    """Domain operations on one libvirt URI."""

    def __init__(
        self,
        uri: str,
        *,
        on_domain_event: Callable[[str], None] | None = None,
        on_network_event: Callable[[str], None] | None = None,
        on_reconnect: Callable[[], None] | None = None,
        on_disconnect: Callable[[str], None] | None = None,
        keepalive_interval: int = 5,
        keepalive_count: int = 3,
        reconnect_cap: float = 30.0,
    ) -> None:
        self.uri = uri
        self._on_domain_event = on_domain_event
        self._on_network_event = on_network_event
        self._on_reconnect = on_reconnect
        self._on_disconnect = on_disconnect
        self._keepalive = (keepalive_interval, keepalive_count)
        self._reconnect_cap = reconnect_cap
        self._lock = threading.RLock()
        self._conn: Any = None
        self._callback_ids: list[int] = []
        self._network_callback_ids: list[int] = []
        self._closed = threading.Event()
        self._reconnecting = False
        self._last_error = ""
        self._capabilities: tuple[Any, str] | None = None

    # -- connection ----------------------------------------------------------------------

    def open(self) -> None:
        """Connect now; raises ``Unavailable`` if libvirtd does not answer."""
        _EventLoop.ensure()
        with self._lock:
            self._connect()

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._conn is not None

    @property
    def last_error(self) -> str:
        return self._last_error

    def _connect(self) -> Any:
        if self._conn is not None:
            return self._conn
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            self._last_error = str(exc)
            raise Unavailable(f"cannot connect to {self.uri}: {exc}") from exc
        # Local drivers (test:///, qemu:///embed) have neither keepalive nor close callback.
        with contextlib.suppress(libvirt.libvirtError):
            conn.setKeepAlive(*self._keepalive)
        with contextlib.suppress(libvirt.libvirtError):
            conn.registerCloseCallback(self._closed_by_libvirt, None)
        self._callback_ids = []
        self._network_callback_ids = []
        if self._on_domain_event is not None:
            for event in _WATCHED_EVENTS:
                self._callback_ids.append(
                    conn.domainEventRegisterAny(None, event, self._domain_event, None)
                )
        if self._on_network_event is not None:
            with contextlib.suppress(libvirt.libvirtError):  # drivers without networks
                self._network_callback_ids.append(
                    conn.networkEventRegisterAny(
                        None, libvirt.VIR_NETWORK_EVENT_ID_LIFECYCLE, self._network_event, None
                    )
                )
        self._conn = conn
        self._last_error = ""
        return conn

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            self._release(conn)

    def _release(self, conn: Any) -> None:
        for callback in self._callback_ids:
            with contextlib.suppress(libvirt.libvirtError):
                conn.domainEventDeregisterAny(callback)
        for callback in self._network_callback_ids:
            with contextlib.suppress(libvirt.libvirtError):
                conn.networkEventDeregisterAny(callback)
        with contextlib.suppress(libvirt.libvirtError):
            conn.unregisterCloseCallback()
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()

    def _domain_event(self, _conn: Any, dom: Any, *_details: Any) -> None:
        # Runs on the event thread: hand the name over and return.
        if self._on_domain_event is not None:
            self._on_domain_event(dom.name())

    def _network_event(self, _conn: Any, net: Any, *_details: Any) -> None:
        if self._on_network_event is not None:
            self._on_network_event(net.name())

    def _closed_by_libvirt(self, _conn: Any, reason: int, _opaque: Any) -> None:
        self._drop(f"connection closed by libvirt (reason {reason})")

    def _drop(self, why: str) -> None:
        """Forget a dead connection and start reconnecting in the background."""
        with self._lock:
            if self._conn is None and self._reconnecting:
                return
            dead, self._conn = self._conn, None
            self._last_error = why
            if self._reconnecting or self._closed.is_set():
                return
            self._reconnecting = True
        log.warning("libvirt %s: %s; reconnecting", self.uri, why)
        threading.Thread(
            target=self._reconnect_loop, args=(why, dead), name="libvirt-reconnect", daemon=True
        ).start()

    def start_reconnecting(self) -> None:
        """Keep trying to connect in the background (the service started before libvirtd)."""
        _EventLoop.ensure()
        self._drop(self._last_error or "not connected yet")

    def _reconnect_loop(self, why: str, dead: Any) -> None:
        # Here rather than in _drop: _drop may run on libvirt's event thread (inside the
        # close callback), which must neither close its own connection nor wait for the
        # service's work.
        if dead is not None:
            self._release(dead)
        if self._on_disconnect is not None:
            self._on_disconnect(why)
        delay = 0.5
        while not self._closed.is_set():
            try:
                with self._lock:
                    self._connect()
                    self._reconnecting = False
                log.info("libvirt %s: reconnected", self.uri)
                if self._on_reconnect is not None:
                    self._on_reconnect()
                return
            except Unavailable:
                self._closed.wait(delay)
                delay = min(delay * 2, self._reconnect_cap)

    @contextmanager
    def _call(self, what: str) -> Iterator[Any]:
        """The connection for one operation, with libvirt errors mapped to ours."""
        with self._lock:
            if self._conn is None and self._reconnecting:
                raise Unavailable(f"libvirt is unavailable: {self._last_error}")
            conn = self._connect()
        try:
            yield conn
        except libvirt.libvirtError as exc:
            code, domain = exc.get_error_code(), exc.get_error_domain()
            if code in _NOT_FOUND:
                raise NotFound(f"{what}: {exc.get_error_message()}") from exc
            if domain in _CONNECTION_ERRORS or not _alive(conn):
                self._drop(str(exc))
                raise Unavailable(f"{what}: {exc.get_error_message()}") from exc
            raise BackendError(f"{what}: {exc.get_error_message()}") from exc

    @contextmanager
    def domain_call(self, name: str, what: str) -> Iterator[Any]:
        """The libvirt domain ``name`` for one operation of another backend module (the
        guest agent's), with errors mapped as for every call here."""
        with self._call(f"{what} ({name})") as conn:
            yield conn.lookupByName(name)

    # -- domains -------------------------------------------------------------------------

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
            active = dom.isActive() == 1
            running_xml = dom.XMLDesc(0) if active else None
            busy = active and _busy(dom)
        paused = code == libvirt.VIR_DOMAIN_PAUSED
        return LiveDomain(
            config=domain_xml.parse(xml),
            state=_STATES.get(code, "nostate"),
            reason=libvirt_names.reason_word(code, reason),
            autostart=autostart,
            fingerprint=_fingerprint(running_xml or xml, paused, autostart),
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
                result[name] = _fingerprint(xml, name in paused, name in auto)
            return result

    def list_domain_names(self) -> list[str]:
        with self._call("list domains") as conn:
            return sorted(d.name() for d in conn.listAllDomains(0))

    def define_domain(self, xml: str) -> None:
        with self._call("define domain") as conn:
            conn.defineXML(xml)

    def start_domain(self, name: str) -> bool:
        """Start the domain; False when it was already running by then: seen shut off in
        the midst of a libvirt job that starts it again (a revert restarts QEMU)."""
        with self._call(f"start domain {name}") as conn:
            dom = conn.lookupByName(name)
            try:
                dom.create()
            except libvirt.libvirtError:
                if dom.isActive() == 1:
                    return False
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

    # -- snapshots -----------------------------------------------------------------------

    def list_snapshots(self, name: str) -> list[SnapshotInfo]:
        """The domain's snapshots, newest first."""
        with self._call(f"list snapshots of {name}") as conn:
            dom = conn.lookupByName(name)
            found = [snapshot_state.parse(snap.getXMLDesc(0)) for snap in dom.listAllSnapshots(0)]
        return sorted(found, key=lambda s: s.time, reverse=True)

    def get_snapshot(self, name: str, snapshot: str) -> SnapshotInfo:
        """One snapshot of the domain; ``NotFound`` when there is no such snapshot."""
        with self._call(f"read snapshot {snapshot} of {name}") as conn:
            snap = conn.lookupByName(name).snapshotLookupByName(snapshot)
            return snapshot_state.parse(snap.getXMLDesc(0))

    def create_snapshot(self, name: str, snapshot: str, description: str) -> None:
        """An internal snapshot (in the qcow2 images): with the memory state when the guest
        runs, which QEMU requires of an internal snapshot of a running guest."""
        root = ET.Element("domainsnapshot")
        ET.SubElement(root, "name").text = snapshot
        ET.SubElement(root, "description").text = description
        with self._call(f"snapshot {name}") as conn:
            conn.lookupByName(name).snapshotCreateXML(
                ET.tostring(root, encoding="unicode"),
                libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC,
            )

    def delete_snapshot(self, name: str, snapshot: str) -> None:
        with self._call(f"delete snapshot {snapshot} of {name}") as conn:
            conn.lookupByName(name).snapshotLookupByName(snapshot).delete(0)

    def revert_snapshot(self, name: str, snapshot: str, *, running: bool | None) -> None:
        """Back to ``snapshot``; ``running`` True/False forces the guest's state after it,
        None keeps the snapshot's own."""
        flags = 0
        if running is True:
            flags = libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING
        with self._call(f"revert {name} to {snapshot}") as conn:
            dom = conn.lookupByName(name)
            dom.revertToSnapshot(dom.snapshotLookupByName(snapshot), flags)
            if running is False and dom.isActive():
                dom.destroy()

    def freeze(self, name: str) -> int:
        """Freeze the guest's file systems through the guest agent; how many it froze."""
        with self._call(f"freeze file systems of {name}") as conn:
            return int(conn.lookupByName(name).fsFreeze())

    def thaw(self, name: str) -> None:
        with self._call(f"thaw file systems of {name}") as conn:
            conn.lookupByName(name).fsThaw()

    # -- storage volumes -----------------------------------------------------------------

    def volume_path(self, pool: str, volume: str) -> str | None:
        """The path of a volume, or None if the pool has no such volume."""
        with self._call(f"read volume {pool}/{volume}") as conn:
            storage = conn.storagePoolLookupByName(pool)
            try:
                return str(storage.storageVolLookupByName(volume).path())
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                    return None
                raise

    def volume_capacity(self, pool: str, volume: str) -> int:
        with self._call(f"read volume {pool}/{volume}") as conn:
            vol = conn.storagePoolLookupByName(pool).storageVolLookupByName(volume)
            return int(vol.info()[1])

    def create_volume(self, pool: str, volume: str, fmt: str, size: int) -> None:
        xml = (
            f"<volume><name>{_escape(volume)}</name><capacity unit='bytes'>{size}</capacity>"
            f"<target><format type='{_escape(fmt)}'/></target></volume>"
        )
        with self._call(f"create volume {pool}/{volume}") as conn:
            conn.storagePoolLookupByName(pool).createXML(xml, 0)

    def grow_volume(self, pool: str, volume: str, size: int) -> None:
        with self._call(f"grow volume {pool}/{volume}") as conn:
            conn.storagePoolLookupByName(pool).storageVolLookupByName(volume).resize(size, 0)

    def delete_volume(self, pool: str, volume: str) -> None:
        with self._call(f"delete volume {pool}/{volume}") as conn:
            conn.storagePoolLookupByName(pool).storageVolLookupByName(volume).delete(0)

    # -- networks ------------------------------------------------------------------------

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

    def network_active(self, name: str) -> bool | None:
        """Whether a network runs; None when there is no such network."""
        with self._call(f"read network {name}") as conn:
            try:
                return bool(conn.networkLookupByName(name).isActive())
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                    return None
                raise

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
                self._capabilities = (conn, conn.getCapabilities())
            caps = self._capabilities[1]
            # libvirt's test driver advertises only type 'test' but runs definitions of any.
            return f"<domain type='{virt_type}'" in caps or "<domain type='test'" in caps


def _escape(text: str) -> str:
    return xml_escape(text, {"'": "&apos;", '"': "&quot;"})


def _busy(dom: Any) -> bool:
    try:
        return dom.controlInfo()[0] in _CONTROL_BUSY
    except libvirt.libvirtError:
        return False  # stopped meanwhile, or a driver without control info


def _alive(conn: Any) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False
