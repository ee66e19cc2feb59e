"""Open vSwitch through OVSDB: bridges and ports, change events, and surviving OVS restarts.

One ``Ovsdb`` per service holds one ovsdbapp connection: an in-memory replica of the tables
kvmrec reads (``Open_vSwitch``, ``Bridge``, ``Port``, ``Interface``; only the columns it
uses, so the 5-second ``Interface.statistics`` refresh of a busy host never reaches us),
kept current by ovsdb-server's monitor updates on a thread of ovsdbapp's (the "IDL
thread"). Reads come from the replica; ``apply`` turns one reconcile's ``BridgeChange``
into the few ovsdbapp commands that actually change something and commits them in one
transaction, then waits (bounded) until ovs-vswitchd reports it has applied that
configuration, as ``ovs-vsctl`` does, so a port's ``ofport``/``error`` can be read at once.

Events: every monitor update passes through ``_Idl.notify`` on the IDL thread, where the
replica is consistent, so a Port or Interface row is traced to its bridge there (the
ovsdbapp ``RowEventHandler`` would run handlers on another thread against a replica the
IDL thread keeps changing). ``on_bridge_event`` gets only the bridge's name. Initial
dumps (after connecting) are not events: ``open()`` and ``on_reconnect`` already mean
"look at everything".

Promiscuous mode lives in the kernel, not in OVSDB: ``set_promiscuous`` sends rtnetlink
``RTM_NEWLINK`` (what ``ip link set promisc`` sends), and the IDL thread also listens to
rtnetlink link notifications, so a bridge device whose flag changes (an operator's ``ip
link``, or ovs-vswitchd: it drops the flag of its netdev taps when it stops and sets it
when it starts) is an event for that bridge as well.

Restarts:

- ovsdb-server stops: the unix socket closes, the IDL notices at once and
  ``on_disconnect`` is called; calls raise ``Unavailable`` without waiting. The IDL
  reconnects by itself (capped backoff), fetches everything again, and ``on_reconnect``
  is called: rows deleted meanwhile produced no event.
- the database is recreated (``ovsdb-tool create``, a restore): kvmrec keeps a marker in
  ``Open_vSwitch.external_ids`` (``kvmrec-instance``: the id of the first kvmrec process
  that saw this database; later ones adopt it, so two processes never fight over it). An
  update without it means a different database: ``on_reconnect``, and the marker again.
- ovsdb-server hangs (stopped, or stuck): the socket stays open and nothing arrives.
  After 5 s of silence the IDL sends an echo; unanswered 5 s later, it disconnects, as
  above, and reconnects once the server answers again.
- ovs-vswitchd restarts: invisible in OVSDB (measured: not one row changes; its config
  lives in the database and its netdev taps persist), so there is nothing to hear there.
  What a restart changes for kvmrec, the promiscuous flag of netdev bridge devices,
  arrives as a link notification (above).

Nothing here polls: the IDL thread blocks in poll() on the OVSDB socket, the rtnetlink
socket and ovsdbapp's transaction queue; the keeper thread (marker writes, and the
reconnect callbacks, which may do some work) waits on a condition.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import os
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import ovs.db.error
import ovs.jsonrpc
import ovs.poller
import ovs.stream
from ovsdbapp import exceptions as ovsdbapp_exceptions
from ovsdbapp.backend.ovs_idl import connection, idlutils, transaction
from ovsdbapp.schema.open_vswitch import impl_idl

from kvmrec.backends.errors import BackendError, NotFound, Unavailable

log = logging.getLogger(__name__)

__all__ = [
    "DIGEST_KEY",
    "GENERATION_KEY",
    "MARKER_KEY",
    "OWNER_KEY",
    "UNCHANGED",
    "BackendError",
    "Bridge",
    "BridgeChange",
    "NotFound",
    "Ovsdb",
    "Port",
    "Unavailable",
    "minimal_change",
]

# external_ids keys kvmrec stamps on the bridges it owns.
OWNER_KEY: Final = "kvmrec-owner"
GENERATION_KEY: Final = "kvmrec-generation"
DIGEST_KEY: Final = "kvmrec-digest"
# In Open_vSwitch.external_ids: which database this is (see the module docstring).
MARKER_KEY: Final = "kvmrec-instance"

DEFAULT_REMOTE: Final = "unix:/run/openvswitch/db.sock"
_SCHEMA: Final = "Open_vSwitch"
# What kvmrec reads and what ovsdbapp's bridge and port commands touch; nothing else is
# replicated (ovs-vswitchd rewrites Interface.statistics every 5 s on a host with traffic).
_COLUMNS: Final[Mapping[str, list[str]]] = {
    "Open_vSwitch": ["bridges", "external_ids", "next_cfg", "cur_cfg"],
    "Bridge": ["name", "datapath_type", "fail_mode", "external_ids", "ports"],
    "Port": ["name", "interfaces"],
    "Interface": ["name", "type", "external_ids", "ofport", "error"],
}
# The IDL's reconnect backoff once a connection was lost: python-ovs starts at its
# floor of 1 s and doubles to 8 s by default. Capped at 2 s, a restarted ovsdb-server is
# found within 2 s; a failed connect() on a unix socket costs microseconds.
_RECONNECT_BACKOFF_MS: Final = (1000, 2000)
# python-ovs sends no inactivity probes on a unix socket (it trusts a local peer to close
# it), so an ovsdb-server that hangs, or is SIGSTOPped, would only show in call timeouts.
# An echo after 5 s of silence, and a reconnect when that is not answered within 5 s
# more, makes a hung server a disconnect within about 10 s, as over TCP.
_PROBE_INTERVAL_MS: Final = 5000
# Retrying a failed open() (start_reconnecting): from 0.5 s, doubling, capped.
_OPEN_RETRY_CAP: Final = 30.0
# Libvirt puts this into the Interface of each guest port it plugs.
_VM_ID: Final = "vm-id"

_IFF_PROMISC: Final = 0x100


class _Unchanged(enum.Enum):
    UNCHANGED = "unchanged"


# "Leave it as it is", where None already means "clear it".
UNCHANGED: Final = _Unchanged.UNCHANGED


@dataclass(frozen=True)
class Port:
    """A port of a bridge, as OVSDB has it (with its Interface row's details)."""

    name: str
    type: str  # Interface.type: "" (a system device), "internal", "patch", ...
    external_ids: Mapping[str, str]  # of the Interface row: libvirt sets vm-id, iface-id
    # Someone else's lifecycle: libvirt's guest ports, and the bridge's own internal port.
    derived: bool
    ofport: int | None  # None: not (yet) assigned; -1: the datapath could not open it
    error: str | None  # Interface.error


@dataclass(frozen=True)
class Bridge:
    """A bridge and its ports."""

    name: str
    datapath_type: str  # "" is OVS's default (system)
    fail_mode: str | None
    external_ids: Mapping[str, str]
    ports: Mapping[str, Port]  # by port name


@dataclass(frozen=True)
class BridgeChange:
    """Everything one reconcile wants of one bridge, applied in one transaction."""

    name: str
    create: bool = False
    datapath_type: str | None = None  # set when not None
    fail_mode: str | _Unchanged | None = UNCHANGED  # None clears it
    set_external_ids: Mapping[str, str] = field(default_factory=dict)
    remove_external_ids: Sequence[str] = ()
    # (name, interface type): "" or "system" (a host device), or "internal". A port named
    # in both lists is replaced (that is how its type changes); an existing one is kept.
    add_ports: Sequence[tuple[str, str]] = ()
    remove_ports: Sequence[str] = ()

    @property
    def empty(self) -> bool:
        return not (
            self.create
            or self.datapath_type is not None
            or self.fail_mode is not UNCHANGED
            or self.set_external_ids
            or self.remove_external_ids
            or self.add_ports
            or self.remove_ports
        )


def minimal_change(
    change: BridgeChange, current: Bridge | None, port_bridges: Mapping[str, str]
) -> BridgeChange:
    """The part of ``change`` that differs from ``current`` (an empty change: nothing to do).

    ``port_bridges`` maps every port name on the switch to its bridge: a port on another
    bridge cannot be added here (ovsdbapp's ``add_port(may_exist=True)`` would silently
    leave it where it is, and the drift would never go away).
    """
    name = change.name
    if current is None:
        if not change.create:
            raise NotFound(f"bridge {name} does not exist")
        current = Bridge(name, "", None, {}, {name: Port(name, "internal", {}, True, None, None)})
        create = True
    else:
        create = False
    datapath_type = change.datapath_type
    if datapath_type is not None and datapath_type == current.datapath_type:
        datapath_type = None
    if create and datapath_type == "":
        datapath_type = None  # a new bridge has the default already
    fail_mode = change.fail_mode
    if fail_mode is not UNCHANGED and fail_mode == current.fail_mode:
        fail_mode = UNCHANGED
    set_ids = {k: v for k, v in change.set_external_ids.items() if current.external_ids.get(k) != v}
    remove_ids = tuple(
        k
        for k in dict.fromkeys(change.remove_external_ids)
        if k in current.external_ids and k not in change.set_external_ids
    )
    remove_ports: list[str] = []
    for port in dict.fromkeys(change.remove_ports):
        if port == name:
            raise BackendError(f"the bridge's own port {name} cannot be removed")
        if port in current.ports:
            remove_ports.append(port)
    add_ports: list[tuple[str, str]] = []
    for port, kind in change.add_ports:
        if (port in current.ports and port not in remove_ports) or any(
            port == p for p, _ in add_ports
        ):
            continue  # an existing port keeps its type: changing it is remove + add
        elsewhere = port_bridges.get(port)
        if elsewhere is not None and elsewhere != name:
            raise BackendError(f"port {port} is already on bridge {elsewhere}")
        add_ports.append((port, "" if kind == "system" else kind))
    return BridgeChange(
        name,
        create=create,
        datapath_type=datapath_type,
        fail_mode=fail_mode,
        set_external_ids=set_ids,
        remove_external_ids=remove_ids,
        add_ports=tuple(add_ports),
        remove_ports=tuple(remove_ports),
    )


# -- reading rows --------------------------------------------------------------------------


def _optional(value: Any) -> Any:
    # The IDL gives optional columns (min 0, max 1) as a list of zero or one element.
    return value[0] if value else None


def _interface_type(kind: str) -> str:
    return "" if kind == "system" else kind  # both mean "a device of the host"


def bridge_from_row(row: Any) -> Bridge:
    """A ``Bridge`` from an IDL Bridge row (duck-typed: the tests pass plain objects)."""
    ports: dict[str, Port] = {}
    for port in row.ports:
        interfaces = list(port.interfaces)
        # A bond has several interfaces; the one named like the port speaks for it.
        iface = next((i for i in interfaces if i.name == port.name), None)
        if iface is None and interfaces:
            iface = interfaces[0]
        ids = dict(iface.external_ids) if iface is not None else {}
        ports[port.name] = Port(
            name=port.name,
            type=_interface_type(iface.type) if iface is not None else "",
            external_ids=ids,
            derived=port.name == row.name or _VM_ID in ids,
            ofport=_optional(iface.ofport) if iface is not None else None,
            error=_optional(iface.error) if iface is not None else None,
        )
    return Bridge(
        name=row.name,
        datapath_type=row.datapath_type,
        fail_mode=_optional(row.fail_mode),
        external_ids=dict(row.external_ids),
        ports=ports,
    )


# -- rtnetlink -----------------------------------------------------------------------------

_NLMSG_HDR: Final = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_IFINFOMSG: Final = struct.Struct("=BxHiII")  # family, device type, index, flags, change
_RTATTR: Final = struct.Struct("=HH")  # length, type
_NLMSG_ERROR: Final = 2
_RTM_NEWLINK: Final = 16
_RTM_DELLINK: Final = 17
_NLM_F_REQUEST: Final = 0x1
_NLM_F_ACK: Final = 0x4
_IFLA_IFNAME: Final = 3
_RTMGRP_LINK: Final = 0x1


def parse_link_messages(data: bytes) -> list[tuple[str, bool | None]]:
    """(device name, promiscuous, or None if the device went away) for each link message."""
    links: list[tuple[str, bool | None]] = []
    offset = 0
    while offset + _NLMSG_HDR.size <= len(data):
        length, kind = _NLMSG_HDR.unpack_from(data, offset)[:2]
        if length < _NLMSG_HDR.size:
            break
        body = offset + _NLMSG_HDR.size
        if kind in (_RTM_NEWLINK, _RTM_DELLINK) and body + _IFINFOMSG.size <= len(data):
            flags = _IFINFOMSG.unpack_from(data, body)[3]
            name = None
            attr = body + _IFINFOMSG.size
            while attr + _RTATTR.size <= offset + length:
                attr_len, attr_type = _RTATTR.unpack_from(data, attr)
                if attr_len < _RTATTR.size:
                    break
                if attr_type == _IFLA_IFNAME:
                    raw = data[attr + _RTATTR.size : attr + attr_len]
                    name = raw.split(b"\0", 1)[0].decode(errors="replace")
                attr += (attr_len + 3) & ~3
            if name:
                links.append((name, None if kind == _RTM_DELLINK else bool(flags & _IFF_PROMISC)))
        offset += (length + 3) & ~3
    return links


class _LinkWatch:
    """rtnetlink link notifications, read on the IDL thread (its fd joins the IDL's poll)."""

    def __init__(self) -> None:
        self.sock = socket.socket(
            socket.AF_NETLINK,
            socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
            socket.NETLINK_ROUTE,
        )
        self.sock.bind((0, _RTMGRP_LINK))
        self._promisc: dict[str, bool] = {}  # last seen, so a carrier change is no event

    def wait(self, poller: Any) -> None:
        poller.fd_wait(self.sock.fileno(), ovs.poller.POLLIN)

    def changed(self) -> tuple[list[str], bool]:
        """Devices whose promiscuous flag changed (or that came or went), and whether
        notifications were lost (the kernel drops them when the socket buffer is full)."""
        names: list[str] = []
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return names, False
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self._promisc.clear()
                    return names, True
                raise
            for name, promisc in parse_link_messages(data):
                if promisc is None:
                    if self._promisc.pop(name, None) is not None:
                        names.append(name)
                elif self._promisc.get(name) != promisc:
                    self._promisc[name] = promisc
                    names.append(name)

    def close(self) -> None:
        self.sock.close()


def _set_promiscuous(name: str, on: bool, timeout: float) -> None:
    try:
        index = socket.if_nametoindex(name)
    except OSError as exc:
        raise NotFound(f"network device {name} does not exist") from exc
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, _IFF_PROMISC if on else 0, _IFF_PROMISC)
    header = _NLMSG_HDR.pack(
        _NLMSG_HDR.size + len(body), _RTM_NEWLINK, _NLM_F_REQUEST | _NLM_F_ACK, 1, 0
    )
    with socket.socket(
        socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
    ) as sock:
        sock.settimeout(timeout)
        try:
            sock.bind((0, 0))
            sock.send(header + body)
            reply = sock.recv(4096)
        except OSError as exc:
            raise BackendError(f"set promiscuous mode of {name}: {exc}") from exc
    if len(reply) < _NLMSG_HDR.size + 4 or _NLMSG_HDR.unpack_from(reply)[1] != _NLMSG_ERROR:
        raise BackendError(f"set promiscuous mode of {name}: unexpected rtnetlink reply")
    code = -struct.unpack_from("=i", reply, _NLMSG_HDR.size)[0]
    if code == errno.ENODEV:
        raise NotFound(f"network device {name} does not exist")
    if code:
        raise BackendError(f"set promiscuous mode of {name}: {os.strerror(code)}")


# -- ovsdbapp ------------------------------------------------------------------------------


def _fetch_schema(remote: str, timeout: float) -> Any:
    """The Open_vSwitch schema from the server, or ``Unavailable`` within ``timeout``.

    ovsdbapp's ``idlutils.get_schema_helper`` does the same but blocks forever on a
    server that accepts the connection and never answers."""
    deadline = time.monotonic() + timeout
    error, stream = ovs.stream.Stream.open_block(
        ovs.stream.Stream.open(remote), int(timeout * 1000)
    )
    if error:
        raise Unavailable(f"cannot connect to {remote}: {_strerror(error)}")
    rpc = ovs.jsonrpc.Connection(stream)
    reply: Any = None
    try:
        request = ovs.jsonrpc.Message.create_request("get_schema", [_SCHEMA])
        error = rpc.send(request)
        while not error:
            error, reply = rpc.recv()
            if reply is not None and reply.id == request.id:
                break
            if error == errno.EAGAIN:
                error = 0
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Unavailable(f"{remote} did not answer within {timeout}s")
            rpc.run()
            poller = ovs.poller.Poller()
            rpc.wait(poller)
            rpc.recv_wait(poller)
            poller.timer_wait(int(remaining * 1000) + 1)
            poller.block()
        if error:
            raise Unavailable(f"cannot read the schema from {remote}: {_strerror(error)}")
    finally:
        rpc.close()
    if reply.error is not None:
        raise BackendError(f"{remote} has no {_SCHEMA} database: {reply.error}")
    return reply.result


def _strerror(error: int) -> str:
    return "connection closed" if error == ovs.jsonrpc.EOF else os.strerror(error)


class _Idl(connection.OvsdbIdl):  # type: ignore[misc]
    """The replica, with our hooks: every row change, every run of the IDL."""

    def __init__(self, remote: str, helper: Any, owner: Ovsdb, links: _LinkWatch | None):
        super().__init__(remote, helper)
        self._owner = owner
        self._links = links
        self._session.reconnect.set_backoff(*_RECONNECT_BACKOFF_MS)
        self._session.reconnect.set_probe_interval(_PROBE_INTERVAL_MS)

    @property
    def synced(self) -> bool:
        """Connected, and the replica holds what the server has."""
        return bool(self._session.is_connected() and self.state == self.IDL_S_MONITORING)

    def notify(self, event: str, row: Any, updates: Any = None) -> None:
        try:
            self._owner._row_changed(self, event, row, updates)
        except Exception:
            log.exception("ovsdb: handling a %s of a %s row failed", event, row._table.name)

    def run(self) -> Any:
        changed = super().run()
        try:
            self._owner._after_run(self)
        except Exception:
            log.exception("ovsdb: watching the connection failed")
        return changed

    def wait(self, poller: Any) -> None:
        super().wait(poller)
        if self._links is not None:
            self._links.wait(poller)


class _Transaction(impl_idl.OvsVsctlTransaction):  # type: ignore[misc]
    """ovs-vsctl's transaction (it bumps ``next_cfg`` so ovs-vswitchd reports, in
    ``cur_cfg``, when it has applied it; and ovsdbapp's port commands need its
    ``pre_commit``) without its wait for ovs-vswitchd: that one runs on the IDL thread,
    holding the lock every read needs, for up to the whole timeout when ovs-vswitchd is
    down. ``Ovsdb.apply`` waits instead, off the IDL thread."""

    next_cfg: int | None = None

    def __init__(self, *args: Any, bump: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._bump = bump  # False: nothing for ovs-vswitchd (kvmrec's own marker)
        self._bumped = False

    def pre_commit(self, txn: Any) -> None:
        # Without a root row (a database before `ovs-vsctl init`) there is nothing to bump.
        self._bumped = self._bump and bool(self.api.tables["Open_vSwitch"].rows)
        if self._bumped:
            super().pre_commit(txn)
        else:
            txn.expected_ifaces = set()  # ovsdbapp's add_port writes into it

    def post_commit(self, txn: Any) -> None:
        transaction.Transaction.post_commit(self, txn)
        if self._bumped:
            value = txn.get_increment_new_value()
            self.next_cfg = value if isinstance(value, int) and value >= 0 else None


class _Api(impl_idl.OvsdbIdl):  # type: ignore[misc]
    """ovsdbapp's Open_vSwitch API on one connection of our own."""

    # ovsdbapp keeps the connection in a class attribute (Backend._ovsdb_connection) that
    # the first instance sets and every later one reuses, whatever it is given: a second
    # Ovsdb, or a reopened one, would talk through the first, closed, IDL. Per instance:
    _own_connection: Any = None

    @property
    def ovsdb_connection(self) -> Any:
        return self._own_connection

    @ovsdb_connection.setter
    def ovsdb_connection(self, value: Any) -> None:
        self._own_connection = value

    def create_transaction(
        self, check_error: bool = False, log_errors: bool = True, bump: bool = True, **_: Any
    ) -> _Transaction:
        return _Transaction(
            self, self.ovsdb_connection, check_error=check_error, log_errors=log_errors, bump=bump
        )


def _describe(exc: BaseException) -> str:
    # ovsdbapp's exceptions format a message from keyword arguments; raised without them
    # (idlutils.wait_for_change does), str() itself fails.
    try:
        return str(exc) or type(exc).__name__
    except Exception:
        return type(exc).__name__


# -- the connection ------------------------------------------------------------------------


class Ovsdb:
    """Bridges and ports of one Open vSwitch, through its OVSDB server."""

    def __init__(
        self,
        remote: str = DEFAULT_REMOTE,
        *,
        on_bridge_event: Callable[[str], None] | None = None,
        on_reconnect: Callable[[], None] | None = None,
        on_disconnect: Callable[[str], None] | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.remote = remote
        self.timeout = timeout
        self._on_bridge_event = on_bridge_event
        self._on_reconnect = on_reconnect
        self._on_disconnect = on_disconnect
        self._instance = uuid.uuid4().hex  # our marker, if we are first to stamp
        self._lock = threading.Lock()  # open/close
        self._api: _Api | None = None
        self._idl: _Idl | None = None
        self._links: _LinkWatch | None = None
        self._last_error = "not connected yet"
        # Shared with the IDL thread and the keeper, under _cond:
        self._cond = threading.Condition()
        self._synced = False
        self._ever_synced = False
        self._pending: list[str] = []  # "down", "up", "marker": for the keeper
        self._marker: str | None = None  # the marker this database carries, as we know it
        self._cur_cfg = 0
        self._vswitchd_stalled_at: int | None = None  # cur_cfg when a wait for it ran out
        self._closed = False
        self._retrying_open = False
        self._keeper: threading.Thread | None = None

    # -- connection ----------------------------------------------------------------------

    def open(self) -> None:
        """Connect and load the replica; ``Unavailable`` if ovsdb-server does not answer
        within the timeout."""
        with self._lock:
            self._closed = False
            self._open()
        self._start_keeper()
        self._stamp()

    def _open(self) -> None:
        if self._api is not None:
            return
        try:
            helper = idlutils.create_schema_helper(_fetch_schema(self.remote, self.timeout))
        except Unavailable as exc:
            self._last_error = str(exc)
            raise
        for table, columns in _COLUMNS.items():
            helper.register_columns(table, columns)
        links: _LinkWatch | None = None
        if self._on_bridge_event is not None:
            try:
                links = _LinkWatch()
            except OSError as exc:  # no rtnetlink (a restricted sandbox): OVSDB events only
                log.warning("ovsdb: no link notifications (%s)", exc)
        idl = _Idl(self.remote, helper, self, links)
        conn = connection.Connection(idl, self.timeout)
        with self._cond:
            self._synced = self._ever_synced = False
            self._pending.clear()
            self._marker = None
        try:
            api = _Api(conn, start=False)
            conn.start()
        except Exception as exc:
            conn.stop(timeout=1.0)
            with contextlib.suppress(Exception):
                idl.close()
            if links is not None:
                links.close()
            self._last_error = f"{self.remote} did not send its database: {_describe(exc)}"
            raise Unavailable(self._last_error) from exc
        if conn.thread is not None:
            conn.thread.name = "ovsdb-idl"
        self._api, self._idl, self._links = api, idl, links
        self._last_error = ""
        log.info("ovsdb: connected to %s", self.remote)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        with self._lock:
            api, self._api, self._idl = self._api, None, None
            links, self._links = self._links, None
            if api is not None:
                api.ovsdb_connection.stop(timeout=self.timeout)
            if links is not None:
                links.close()
        keeper, self._keeper = self._keeper, None
        if keeper is not None and keeper is not threading.current_thread():
            keeper.join(self.timeout)
        with self._cond:
            self._synced = False

    @property
    def connected(self) -> bool:
        with self._cond:
            return self._api is not None and self._synced

    @property
    def last_error(self) -> str:
        return self._last_error

    @property
    def marker(self) -> str | None:
        """The ``MARKER_KEY`` value of the database, as last seen."""
        with self._cond:
            return self._marker

    def start_reconnecting(self) -> None:
        """Keep trying to open in the background (the service started before OVS);
        ``on_reconnect`` is called once it succeeds."""
        with self._cond:
            if self._api is not None:
                return  # open: the IDL reconnects by itself
            self._closed = False
            self._retrying_open = True
            self._cond.notify_all()
        self._start_keeper()

    def _start_keeper(self) -> None:
        with self._cond:
            if self._keeper is not None and self._keeper.is_alive():
                return
            self._keeper = threading.Thread(target=self._keep, name="ovsdb-keeper", daemon=True)
            self._keeper.start()

    # -- on the IDL thread: hand over and return -------------------------------------------

    def _row_changed(self, idl: _Idl, event: str, row: Any, updates: Any) -> None:
        table = row._table.name
        if table == "Open_vSwitch":
            self._root_changed(idl, event, row)
            return
        if self._on_bridge_event is None or idl.state != idl.IDL_S_MONITORING:
            return  # a dump after (re)connecting: open() and on_reconnect cover it
        names: list[str] = []
        if table == "Bridge":
            names = [row.name]
        elif table == "Port":
            # A port that comes or goes changes its bridge's row too: that is the event.
            if event == "update":
                names = [b.name for b in idl.tables["Bridge"].rows.values() if row in b.ports]
        elif table == "Interface" and event == "update":
            ports = [p for p in idl.tables["Port"].rows.values() if row in p.interfaces]
            names = [
                b.name
                for b in idl.tables["Bridge"].rows.values()
                if any(p in b.ports for p in ports)
            ]
        for name in names:
            self._on_bridge_event(name)

    def _root_changed(self, idl: _Idl, event: str, row: Any) -> None:
        with self._cond:
            if event != "delete":
                self._cur_cfg = int(row.cur_cfg)
                self._cond.notify_all()  # apply() may be waiting for ovs-vswitchd
            if idl.state != idl.IDL_S_MONITORING:
                return  # the reconnect itself re-checks the marker
            seen = None if event == "delete" else row.external_ids.get(MARKER_KEY)
            if seen is not None and seen == self._marker:
                return
            if seen is not None and self._marker is None:
                self._marker = seen  # another kvmrec's, stamped first: adopt it
                return
            # Gone, or replaced after being gone: a different database. A root row created
            # while connected is one too (`ovs-vsctl init` on a fresh database).
            if self._marker is not None or event == "create":
                self._marker = None
                self._pending.append("marker")
                self._cond.notify_all()

    def _after_run(self, idl: _Idl) -> None:
        synced = idl.synced
        with self._cond:
            if synced != self._synced:
                self._synced = synced
                # Which database this is gets settled again once connected (_stamp);
                # until then an update without the marker is no news.
                self._marker = None
                # The first sync is open()'s own; later ones are reconnects.
                if self._ever_synced:
                    self._pending.append("up" if synced else "down")
                    self._cond.notify_all()
                self._ever_synced = self._ever_synced or synced
        if idl._links is not None:
            names, lost = idl._links.changed()
            if self._on_bridge_event is None:
                return
            bridges = idl.tables["Bridge"].rows
            if lost:  # the kernel dropped notifications: any bridge may have changed
                names = [b.name for b in bridges.values()]
            for name in names:
                if lost or idlutils.row_by_value(idl, "Bridge", "name", name, None) is not None:
                    self._on_bridge_event(name)

    # -- the keeper thread -----------------------------------------------------------------

    def _keep(self) -> None:
        delay = 0.5
        while True:
            with self._cond:
                while not (self._closed or self._pending or self._retrying_open):
                    self._cond.wait()
                if self._closed:
                    return
                pending, self._pending = self._pending, []
                retrying = self._retrying_open
            if retrying:
                try:
                    with self._lock:
                        self._open()
                except BackendError as exc:
                    self._last_error = str(exc)
                    with self._cond:
                        self._cond.wait(delay)
                    delay = min(delay * 2, _OPEN_RETRY_CAP)
                    continue
                with self._cond:
                    self._retrying_open = False
                delay = 0.5
                pending.append("up")
            try:
                self._handle(pending)
            except Exception:  # the keeper must outlive a failing callback
                log.exception("ovsdb: handling %s failed", pending)

    def _handle(self, pending: list[str]) -> None:
        if "down" in pending:
            log.warning("ovsdb: lost %s; waiting for it", self.remote)
            if self._on_disconnect is not None:
                self._on_disconnect(f"lost the connection to {self.remote}")
        if any(p in ("up", "marker") for p in pending) and self.connected:
            why = "connected again" if "up" in pending else "the database was recreated"
            log.info("ovsdb: %s: %s; looking at everything", self.remote, why)
            self._stamp()
            if self._on_reconnect is not None:
                self._on_reconnect()

    def _stamp(self) -> None:
        """Write the marker unless the database has one, and remember what it has."""
        try:
            with self._call("mark the database") as api:
                with api.ovsdb_connection.lock:
                    roots = list(api.tables["Open_vSwitch"].rows.values())
                    missing = bool(roots) and MARKER_KEY not in roots[0].external_ids
                if not roots:
                    log.warning("ovsdb: %s has no Open_vSwitch row yet", self.remote)
                    return
                # Only for someone who listens (`kvmrec plan` changes nothing). db_add on
                # a map adds a missing key and leaves a present one: two kvmrec
                # processes that both saw it missing agree on the first.
                if missing and self._on_reconnect is not None:
                    with api.transaction(
                        check_error=True, log_errors=False, nested=False, bump=False
                    ) as txn:
                        txn.add(
                            api.db_add(
                                "Open_vSwitch",
                                roots[0].uuid,
                                "external_ids",
                                {MARKER_KEY: self._instance},
                            )
                        )
                with api.ovsdb_connection.lock:
                    seen = roots[0].external_ids.get(MARKER_KEY)
            with self._cond:
                self._marker = seen
        except BackendError as exc:
            log.warning("ovsdb: cannot mark the database: %s", exc)

    # -- calls -----------------------------------------------------------------------------

    @contextmanager
    def _call(self, what: str) -> Iterator[_Api]:
        """The API for one operation, with ovsdbapp's errors mapped to ours."""
        with self._cond:
            api, synced = self._api, self._synced
        if api is None:
            raise Unavailable(f"{what}: not connected to {self.remote}: {self._last_error}")
        if not synced:
            # Known down: say so now rather than after a transaction's full timeout.
            raise Unavailable(f"{what}: {self.remote} is unavailable")
        try:
            yield api
        except ovsdbapp_exceptions.TimeoutException as exc:
            raise Unavailable(f"{what}: {_describe(exc)}") from exc
        except idlutils.RowNotFound as exc:
            raise NotFound(f"{what}: {_describe(exc)}") from exc
        except (RuntimeError, ovs.db.error.Error) as exc:
            text = _describe(exc)
            if "timed out" in text:
                raise Unavailable(f"{what}: {text}") from exc
            raise BackendError(f"{what}: {text}") from exc

    # -- bridges ---------------------------------------------------------------------------

    def get_bridge(self, name: str) -> Bridge | None:
        with self._call(f"read bridge {name}") as api, api.ovsdb_connection.lock:
            row = idlutils.row_by_value(api.idl, "Bridge", "name", name, None)
            return None if row is None else bridge_from_row(row)

    def list_bridges(self) -> list[str]:
        with self._call("list bridges") as api, api.ovsdb_connection.lock:
            return sorted(row.name for row in api.tables["Bridge"].rows.values())

    def apply(self, change: BridgeChange) -> None:
        """Make the bridge what ``change`` says, in one transaction; nothing if it already is.

        Returns once ovs-vswitchd has applied it, so the ports' ``ofport`` and ``error``
        can be read at once: at most ``timeout`` later, and not at all while ovs-vswitchd
        has done nothing since it last let that pass (not running: the configuration is
        in the database, and it applies it when it comes)."""
        name = change.name
        with self._call(f"apply bridge {name}") as api:
            with api.ovsdb_connection.lock:
                tables = api.tables
                row = idlutils.row_by_value(api.idl, "Bridge", "name", name, None)
                current = None if row is None else bridge_from_row(row)
                port_bridges = {
                    port.name: bridge.name
                    for bridge in tables["Bridge"].rows.values()
                    for port in bridge.ports
                }
                roots = list(tables["Open_vSwitch"].rows.values())
            todo = minimal_change(change, current, port_bridges)
            if todo.empty:
                return
            if todo.create and not roots:
                raise BackendError(
                    f"{self.remote} has no Open_vSwitch row (has `ovs-vsctl init` run?)"
                )
            with api.transaction(check_error=True, log_errors=False, nested=False) as txn:
                for command in _commands(api, todo):
                    txn.add(command)
            next_cfg = txn.next_cfg
        if next_cfg is not None:
            self._wait_for_vswitchd(next_cfg)

    def _wait_for_vswitchd(self, next_cfg: int) -> None:
        deadline = time.monotonic() + self.timeout
        with self._cond:
            if self._cur_cfg == self._vswitchd_stalled_at:
                return  # still nothing from it since the last wait ran out
            while self._cur_cfg < next_cfg and self._synced:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._vswitchd_stalled_at = self._cur_cfg
                    log.warning(
                        "ovsdb: ovs-vswitchd has not applied configuration %d within %.1fs"
                        " (is it running?); not waiting for it again until it does",
                        next_cfg,
                        self.timeout,
                    )
                    return
                self._cond.wait(remaining)

    def delete_bridge(self, name: str) -> None:
        """Delete a bridge with its ports; nothing if there is no such bridge."""
        with self._call(f"delete bridge {name}") as api:
            with api.ovsdb_connection.lock:
                if idlutils.row_by_value(api.idl, "Bridge", "name", name, None) is None:
                    return
            with api.transaction(check_error=True, log_errors=False, nested=False) as txn:
                txn.add(api.del_br(name, if_exists=True))

    # -- the host --------------------------------------------------------------------------

    @staticmethod
    def kernel_datapath() -> bool:
        """Whether bridges of datapath type "system" (the kernel's) can work here.

        Not ``Open_vSwitch.datapath_types``: that lists the datapath classes built into
        ovs-vswitchd, "system" included on every Linux build, module loaded or not (on a
        kernel without it: ``[netdev, system]``, while a system bridge gets no ofport and
        the log says "failed to open datapath of type system"). ovs-vswitchd does not load
        the module itself; whether it is loaded is the question.
        """
        return os.path.isdir("/sys/module/openvswitch")

    def set_promiscuous(self, name: str, on: bool) -> None:
        """Promiscuous mode of a network device (a bridge's internal one: OVS has no
        column for it).

        rtnetlink ``RTM_NEWLINK`` with only ``IFF_PROMISC`` in its change mask, as ``ip
        link set promisc`` sends it: the kernel changes that one flag. The ioctl
        (``SIOCSIFFLAGS``) would write back every flag read a moment earlier, undoing an
        up/down of ovs-vswitchd's in between; running ``ip`` would cost a process and a
        dependency on iproute2. The flag is the device's user-level promiscuity, one
        bit shared with every other user of it: on a netdev bridge ovs-vswitchd sets it
        when it starts and clears it when it stops.
        """
        if not _valid_device_name(name):
            raise NotFound(f"network device {name!r} does not exist")
        _set_promiscuous(name, on, self.timeout)

    @staticmethod
    def promiscuous(name: str) -> bool | None:
        """Whether the device is promiscuous (for whatever reason: tcpdump counts too);
        None if there is no such device."""
        if not _valid_device_name(name):
            return None
        try:
            with open(f"/sys/class/net/{name}/flags") as flags:
                return bool(int(flags.read().strip(), 16) & _IFF_PROMISC)
        except (FileNotFoundError, NotADirectoryError):
            return None


def _valid_device_name(name: str) -> bool:
    # Linux device names: up to 15 bytes, no "/", no whitespace, not "." or "..".
    return (
        0 < len(name.encode()) <= 15
        and name not in (".", "..")
        and not any(c == "/" or c.isspace() for c in name)
    )


def _commands(api: _Api, todo: BridgeChange) -> list[Any]:
    """ovsdbapp commands for a minimal change: idempotent verbs, should the switch have
    changed between planning and committing."""
    name = todo.name
    commands: list[Any] = []
    if todo.create:
        commands.append(api.add_br(name, may_exist=True, datapath_type=todo.datapath_type))
    elif todo.datapath_type is not None:
        commands.append(
            api.db_set("Bridge", name, ("datapath_type", todo.datapath_type), if_exists=False)
        )
    if todo.fail_mode is None:
        commands.append(api.db_clear("Bridge", name, "fail_mode"))
    elif todo.fail_mode is not UNCHANGED:
        commands.append(api.db_set("Bridge", name, ("fail_mode", todo.fail_mode), if_exists=False))
    if todo.set_external_ids:
        commands.append(
            api.db_set(
                "Bridge", name, ("external_ids", dict(todo.set_external_ids)), if_exists=False
            )
        )
    if todo.remove_external_ids:
        commands.append(api.db_remove("Bridge", name, "external_ids", *todo.remove_external_ids))
    for port in todo.remove_ports:
        commands.append(api.del_port(port, bridge=name, if_exists=True))
    for port, kind in todo.add_ports:
        attrs = {"type": kind} if kind else {}
        commands.append(api.add_port(name, port, may_exist=True, **attrs))
    return commands
