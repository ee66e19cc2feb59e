"""``Ovsdb``: the bridges and ports of one Open vSwitch, as the service uses them.

Reads come from the replica (ovs/connection.py); ``apply`` turns one reconcile's
``BridgeChange`` (ovs/model.py) into the few ovsdbapp commands that actually change
something and commits them in one transaction, then waits (bounded) until ovs-vswitchd
reports it has applied that configuration, as ``ovs-vsctl`` does, so a port's
``ofport``/``error`` can be read at once. The promiscuous flag of a bridge's device is the
kernel's (ovs/netlink.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from ovsdbapp.backend.ovs_idl import idlutils

from kvmrec.backends import host
from kvmrec.backends.errors import BackendError
from kvmrec.backends.ovs import netlink
from kvmrec.backends.ovs.connection import Connection
from kvmrec.backends.ovs.idl import Api
from kvmrec.backends.ovs.model import (
    UNCHANGED,
    Bridge,
    BridgeChange,
    bridge_from_row,
    minimal_change,
)

DEFAULT_REMOTE: Final = "unix:/run/openvswitch/db.sock"


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
        self.connection = Connection(
            remote,
            on_bridge_event=on_bridge_event,
            on_reconnect=on_reconnect,
            on_disconnect=on_disconnect,
            timeout=timeout,
        )

    # -- the connection ------------------------------------------------------------------

    def open(self) -> None:
        """Connect and load the replica; ``Unavailable`` if ovsdb-server does not answer
        within the timeout."""
        self.connection.open()

    def close(self) -> None:
        self.connection.close()

    @property
    def connected(self) -> bool:
        return self.connection.connected

    @property
    def marker(self) -> str | None:
        """The ``MARKER_KEY`` value of the database, as last seen."""
        return self.connection.marker

    def start_reconnecting(self) -> None:
        """Keep trying to open in the background (the service started before OVS);
        ``on_reconnect`` is called once it succeeds."""
        self.connection.start_reconnecting()

    # -- bridges ---------------------------------------------------------------------------

    def get_bridge(self, name: str) -> Bridge | None:
        with self.connection.call(f"read bridge {name}") as api, api.ovsdb_connection.lock:
            row = idlutils.row_by_value(api.idl, "Bridge", "name", name, None)
            return None if row is None else bridge_from_row(row)

    def apply(self, change: BridgeChange) -> None:
        """Make the bridge what ``change`` says, in one transaction; nothing if it already is.

        Returns once ovs-vswitchd has applied it, so the ports' ``ofport`` and ``error``
        can be read at once: at most ``timeout`` later, and not at all while ovs-vswitchd
        has done nothing since it last let that pass (not running: the configuration is
        in the database, and it applies it when it comes)."""
        name = change.name
        with self.connection.call(f"apply bridge {name}") as api:
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
            self.connection.wait_for_vswitchd(next_cfg)

    def delete_bridge(self, name: str) -> None:
        """Delete a bridge with its ports; nothing if there is no such bridge."""
        with self.connection.call(f"delete bridge {name}") as api:
            with api.ovsdb_connection.lock:
                if idlutils.row_by_value(api.idl, "Bridge", "name", name, None) is None:
                    return
            with api.transaction(check_error=True, log_errors=False, nested=False) as txn:
                txn.add(api.del_br(name, if_exists=True))

    # -- the devices --------------------------------------------------------------------------

    @staticmethod
    def kernel_datapath() -> bool:
        """Whether bridges of datapath type "system" (the kernel's) can work here."""
        return host.kernel_datapath()

    def set_promiscuous(self, name: str, on: bool) -> None:
        """Promiscuous mode of a bridge's device (ovs/netlink.py): OVS has no column for it."""
        netlink.set_promiscuous(name, on, self.timeout)

    @staticmethod
    def promiscuous(name: str) -> bool | None:
        """Whether the device is promiscuous; None if there is no such device."""
        return netlink.promiscuous(name)


def _commands(api: Api, todo: BridgeChange) -> list[Any]:
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
