"""ovsdbapp and python-ovs, fitted to kvmrec: the replica, its transactions, its schema.

``Idl`` is the in-memory replica of the tables kvmrec reads (``Open_vSwitch``, ``Bridge``,
``Port``, ``Interface``; only the columns it uses, so the 5-second
``Interface.statistics`` refresh of a busy host never reaches us), kept current by
ovsdb-server's monitor updates on a thread of ovsdbapp's (the "IDL thread"). It hands every
row change and every run of its loop to a ``Watcher`` (ovs/connection.py), on that thread,
where the replica is consistent. ``Api`` is ovsdbapp's Open_vSwitch API on one connection
of its own, with ``Transaction``: ovs-vsctl's, without its blocking wait for ovs-vswitchd.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Mapping
from typing import Any, Final, Protocol

import ovs.jsonrpc
import ovs.poller
import ovs.stream
from ovsdbapp.backend.ovs_idl import connection, transaction
from ovsdbapp.schema.open_vswitch import impl_idl

from kvmrec.backends.errors import BackendError, Unavailable
from kvmrec.backends.ovs.netlink import LinkWatch

log = logging.getLogger(__name__)

_SCHEMA: Final = "Open_vSwitch"
# What kvmrec reads and what ovsdbapp's bridge and port commands touch; nothing else is
# replicated (ovs-vswitchd rewrites Interface.statistics every 5 s on a host with traffic).
COLUMNS: Final[Mapping[str, list[str]]] = {
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


class Watcher(Protocol):
    """Who hears of the replica's changes, on the IDL thread."""

    def row_changed(self, idl: Idl, event: str, row: Any) -> None: ...

    def after_run(self, idl: Idl) -> None: ...


def fetch_schema(remote: str, timeout: float) -> Any:
    """The Open_vSwitch schema from the server, or ``Unavailable`` within ``timeout``.

    ovsdbapp's ``idlutils.get_schema_helper`` does the same but blocks forever on a
    server that accepts the connection and never answers."""
    reply = ask(remote, "get_schema", [_SCHEMA], timeout, "read the schema from")
    if reply.error is not None:
        raise BackendError(f"{remote} has no {_SCHEMA} database: {reply.error}")
    return reply.result


def ask(remote: str, method: str, params: list[Any], timeout: float, what: str) -> Any:
    """One JSON-RPC request to the server and its reply, or ``Unavailable`` within
    ``timeout`` (``what`` says what the request was for, in the error)."""
    deadline = time.monotonic() + timeout
    error, stream = ovs.stream.Stream.open_block(
        ovs.stream.Stream.open(remote), int(timeout * 1000)
    )
    if error:
        raise Unavailable(f"cannot connect to {remote}: {_strerror(error)}")
    rpc = ovs.jsonrpc.Connection(stream)
    reply: Any = None
    try:
        request = ovs.jsonrpc.Message.create_request(method, params)
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
            raise Unavailable(f"cannot {what} {remote}: {_strerror(error)}")
    finally:
        rpc.close()
    return reply


def _strerror(error: int) -> str:
    return "connection closed" if error == ovs.jsonrpc.EOF else os.strerror(error)


class Idl(connection.OvsdbIdl):  # type: ignore[misc]
    """The replica, with our hooks: every row change, every run of the IDL."""

    def __init__(self, remote: str, helper: Any, watcher: Watcher, links: LinkWatch | None):
        super().__init__(remote, helper)
        self._watcher = watcher
        self.links = links
        self._session.reconnect.set_backoff(*_RECONNECT_BACKOFF_MS)
        self._session.reconnect.set_probe_interval(_PROBE_INTERVAL_MS)

    @property
    def synced(self) -> bool:
        """Connected, and the replica holds what the server has."""
        return bool(self._session.is_connected() and self.state == self.IDL_S_MONITORING)

    def notify(self, event: str, row: Any, updates: Any = None) -> None:
        try:
            self._watcher.row_changed(self, event, row)
        except Exception:
            log.exception("ovsdb: handling a %s of a %s row failed", event, row._table.name)

    def run(self) -> Any:
        changed = super().run()
        try:
            self._watcher.after_run(self)
        except Exception:
            log.exception("ovsdb: watching the connection failed")
        return changed

    def wait(self, poller: Any) -> None:
        super().wait(poller)
        if self.links is not None:
            self.links.wait(poller)


class Transaction(impl_idl.OvsVsctlTransaction):  # type: ignore[misc]
    """ovs-vsctl's transaction (it bumps ``next_cfg`` so ovs-vswitchd reports, in
    ``cur_cfg``, when it has applied it; and ovsdbapp's port commands need its
    ``pre_commit``) without its wait for ovs-vswitchd: that one runs on the IDL thread,
    holding the lock every read needs, for up to the whole timeout when ovs-vswitchd is
    down. ``Ovsdb.apply`` waits instead (ovs/client.py), off the IDL thread."""

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


class Api(impl_idl.OvsdbIdl):  # type: ignore[misc]
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
    ) -> Transaction:
        return Transaction(
            self, self.ovsdb_connection, check_error=check_error, log_errors=log_errors, bump=bump
        )


def describe(exc: BaseException) -> str:
    # ovsdbapp's exceptions format a message from keyword arguments; raised without them
    # (idlutils.wait_for_change does), str() itself fails.
    try:
        return str(exc) or type(exc).__name__
    except Exception:
        return type(exc).__name__
