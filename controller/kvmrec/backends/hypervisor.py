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
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import libvirt

from kvmrec.backends import domain_xml
from kvmrec.backends.domain_xml import DomainConfig, Owner

log = logging.getLogger(__name__)


class BackendError(Exception):
    """A libvirt call failed."""


class NotFound(BackendError):
    """The object does not exist (any more)."""


class Unavailable(BackendError):
    """libvirtd cannot be reached; retry later."""


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
_CONNECTION_ERRORS = {libvirt.VIR_FROM_REMOTE, libvirt.VIR_FROM_RPC}
_NOT_FOUND = {libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT}


@dataclass(frozen=True)
class LiveDomain:
    """A domain as libvirt has it."""

    config: DomainConfig  # the persistent definition
    state: str  # running | paused | shutoff | crashed | ...
    autostart: bool
    fingerprint: Fingerprint  # changes whenever any of the above does

    @property
    def active(self) -> bool:
        return self.state not in ("shutoff", "crashed", "nostate")


# The persistent XML, a coarse run state and the autostart flag: everything a reconcile
# looks at. Kept whole rather than hashed: comparing two equal strings is a memcmp, cheaper
# than hashing either.
Fingerprint = tuple[str, str, bool]


def _fingerprint(xml: str, active: bool, paused: bool, autostart: bool) -> Fingerprint:
    return (xml, "paused" if paused else "active" if active else "inactive", autostart)


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
        on_reconnect: Callable[[], None] | None = None,
        on_disconnect: Callable[[str], None] | None = None,
        keepalive_interval: int = 5,
        keepalive_count: int = 3,
        reconnect_cap: float = 30.0,
    ) -> None:
        self.uri = uri
        self._on_domain_event = on_domain_event
        self._on_reconnect = on_reconnect
        self._on_disconnect = on_disconnect
        self._keepalive = (keepalive_interval, keepalive_count)
        self._reconnect_cap = reconnect_cap
        self._lock = threading.RLock()
        self._conn: Any = None
        self._callback_ids: list[int] = []
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
        with contextlib.suppress(
            libvirt.libvirtError
        ):  # local drivers (test:///, qemu:///embed) have no keepalive
            conn.setKeepAlive(*self._keepalive)
        with contextlib.suppress(
            libvirt.libvirtError
        ):  # the same drivers have no close callback either
            conn.registerCloseCallback(self._closed_by_libvirt, None)
        self._callback_ids = []
        if self._on_domain_event is not None:
            self._callback_ids.append(
                conn.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None
                )
            )
        self._conn = conn
        self._last_error = ""
        return conn

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            for callback in self._callback_ids:
                with contextlib.suppress(libvirt.libvirtError):
                    conn.domainEventDeregisterAny(callback)
            with contextlib.suppress(libvirt.libvirtError):
                conn.unregisterCloseCallback()
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()

    def _lifecycle(self, _conn: Any, dom: Any, _event: int, _detail: int, _opaque: Any) -> None:
        # Runs on the event thread: hand the name over and return.
        if self._on_domain_event is not None:
            self._on_domain_event(dom.name())

    def _closed_by_libvirt(self, _conn: Any, reason: int, _opaque: Any) -> None:
        self._drop(f"connection closed by libvirt (reason {reason})")

    def _drop(self, why: str) -> None:
        """Forget a dead connection and start reconnecting in the background."""
        with self._lock:
            if self._conn is None and self._reconnecting:
                return
            self._conn = None
            self._last_error = why
            if self._reconnecting or self._closed.is_set():
                return
            self._reconnecting = True
        log.warning("libvirt %s: %s; reconnecting", self.uri, why)
        if self._on_disconnect is not None:
            self._on_disconnect(why)
        threading.Thread(target=self._reconnect_loop, name="libvirt-reconnect", daemon=True).start()

    def start_reconnecting(self) -> None:
        """Keep trying to connect in the background (the service started before libvirtd)."""
        _EventLoop.ensure()
        self._drop(self._last_error or "not connected yet")

    def _reconnect_loop(self) -> None:
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
            code = dom.state()[0]
            autostart = bool(dom.autostart())
            active = dom.isActive() == 1
        state = _STATES.get(code, "nostate")
        fingerprint = _fingerprint(xml, active, code == libvirt.VIR_DOMAIN_PAUSED, autostart)
        return LiveDomain(domain_xml.parse(xml), state, autostart, fingerprint)

    def get_running_config(self, name: str) -> DomainConfig | None:
        """The definition the running guest was started with; None when it is not running."""
        with self._call(f"read domain {name}") as conn:
            try:
                dom = conn.lookupByName(name)
                if not dom.isActive():
                    return None
                return domain_xml.parse(dom.XMLDesc(0))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return None
                raise

    def fingerprints(self) -> Mapping[str, Fingerprint]:
        """Every domain's fingerprint, cheaply: one XML read per domain and two short lists
        (a domain listed by libvirt already knows its ID, so "active" costs no call)."""
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
                    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
                except libvirt.libvirtError:
                    continue  # undefined meanwhile: its event will enqueue it
                result[name] = _fingerprint(xml, dom.ID() != -1, name in paused, name in auto)
            return result

    def list_domain_names(self) -> list[str]:
        with self._call("list domains") as conn:
            return sorted(d.name() for d in conn.listAllDomains(0))

    def define_domain(self, xml: str) -> None:
        with self._call("define domain") as conn:
            conn.defineXML(xml)

    def start_domain(self, name: str) -> None:
        with self._call(f"start domain {name}") as conn:
            conn.lookupByName(name).create()

    def resume_domain(self, name: str) -> None:
        with self._call(f"resume domain {name}") as conn:
            conn.lookupByName(name).resume()

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
                self._capabilities = (conn, conn.getCapabilities())
            caps = self._capabilities[1]
            # libvirt's test driver advertises only type 'test' but runs definitions of any.
            return f"<domain type='{virt_type}'" in caps or "<domain type='test'" in caps


def _alive(conn: Any) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False
