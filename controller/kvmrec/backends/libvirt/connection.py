"""The libvirt connection: opening it, its events, and surviving libvirtd.

One ``Connection`` per service, shared by all worker threads (libvirt connections are
thread-safe and release the GIL while waiting on the daemon). The operations on it live in
the modules of their concern (domains, snapshots, storage, networks, guest_agent), each a
class on one ``Connection``; libvirt/hypervisor.py puts them together.

Events: libvirt needs its default event loop registered before the first connection is
opened, and a thread to run it; ``_EventLoop`` does both once per process. Lifecycle
callbacks only hand the domain's (or network's) name to ``on_domain_event``
(``on_network_event``), which enqueues a key; they never do work on the event thread. A
lifecycle event that only echoes one of kvmrec's own calls is dropped (libvirt/echoes.py).
The loop's thread gathers events for a moment after each turn (``GATHER``), so that a
burst of calls has its events dispatched together.

Reconnection: keepalive probes notice a dead daemon, the close callback drops the
connection, and a reconnect thread tries again with capped backoff. Calls made meanwhile
raise ``Unavailable`` at once. After a reconnect, events are registered again and
``on_reconnect`` lets the service relist everything, since events were lost while down.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import libvirt

from kvmrec.backends.errors import BackendError, NotFound, Unavailable
from kvmrec.backends.libvirt.echoes import Echoes

log = logging.getLogger(__name__)

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


# After each turn of the event loop its thread waits this long, so that the events a burst
# of calls makes (a batch defining and starting guests: two each) are dispatched together.
# One by one, each callback took the interpreter's lock from the worker in the middle of its
# next call and handed it back: 50-70 us a guest on test:///default. An event is delivered
# at most this much later; at idle the loop still sleeps in poll.
GATHER = 0.002


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
            time.sleep(GATHER)


class Connection:
    """One libvirt URI: connected lazily, reconnected in the background."""

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
        self.echoes = Echoes(enabled=on_domain_event is not None)

    def open(self) -> None:
        """Connect now; raises ``Unavailable`` if libvirtd does not answer."""
        _EventLoop.ensure()
        with self._lock:
            self._connect()

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._conn is not None

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
                callback = (
                    self._lifecycle_event
                    if event == libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE
                    else self._domain_event
                )
                self._callback_ids.append(conn.domainEventRegisterAny(None, event, callback, None))
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

    def _lifecycle_event(self, conn: Any, dom: Any, event: int, *details: Any) -> None:
        if not self.echoes.is_echo(dom.name(), event):
            self._domain_event(conn, dom, event, *details)

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

    def call(self, what: str) -> _Call:
        """The libvirt connection for one operation, with libvirt errors mapped to ours."""
        with self._lock:
            if self._conn is None and self._reconnecting:
                raise Unavailable(f"libvirt is unavailable: {self._last_error}")
            return _Call(self, self._connect(), what)

    def _failed(self, conn: Any, what: str, exc: libvirt.libvirtError) -> BackendError:
        """Our error for a libvirt error of one operation; a dead connection is dropped."""
        code, domain = exc.get_error_code(), exc.get_error_domain()
        if code in _NOT_FOUND:
            return NotFound(f"{what}: {exc.get_error_message()}")
        if domain in _CONNECTION_ERRORS or not _alive(conn):
            self._drop(str(exc))
            return Unavailable(f"{what}: {exc.get_error_message()}")
        return BackendError(f"{what}: {exc.get_error_message()}")

    @contextmanager
    def domain_call(self, name: str, what: str) -> Iterator[Any]:
        """The libvirt domain ``name`` for one operation, with errors mapped as for
        ``call``."""
        with self.call(f"{what} ({name})") as conn:
            yield conn.lookupByName(name)


class _Call:
    """``Connection.call``: a class rather than a generator, since every backend call of a
    reconcile goes through one (a generator's context manager costs several times more)."""

    __slots__ = ("_conn", "_connection", "_what")

    def __init__(self, connection: Connection, conn: Any, what: str) -> None:
        self._connection = connection
        self._conn = conn
        self._what = what

    def __enter__(self) -> Any:
        return self._conn

    def __exit__(self, _type: object, exc: BaseException | None, _tb: object) -> None:
        if isinstance(exc, libvirt.libvirtError):
            raise self._connection._failed(self._conn, self._what, exc) from exc


class OnConnection:
    """The base of the operations of one concern: they run on a shared ``Connection``."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def _call(self, what: str) -> contextlib.AbstractContextManager[Any]:
        return self.connection.call(what)


def _alive(conn: Any) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False
