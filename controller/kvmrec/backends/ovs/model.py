"""The Open vSwitch data model kvmrec works with: bridges, their ports, and changes to them.

``Bridge`` and ``Port`` are what OVSDB has (read from the replica's rows by
``bridge_from_row``); a ``BridgeChange`` is everything one reconcile wants of one bridge,
and ``minimal_change`` keeps of it only what differs from the bridge as it is, so the client
commits only real changes and a bridge that already is as wanted costs no transaction.

Plain data, free of the OVS libraries, so the reconcilers and the in-memory fakes of the
tests use it without loading them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from kvmrec.backends.errors import BackendError, NotFound

# external_ids keys kvmrec stamps on the bridges it owns.
OWNER_KEY: Final = "kvmrec-owner"
GENERATION_KEY: Final = "kvmrec-generation"
DIGEST_KEY: Final = "kvmrec-digest"

# Libvirt puts this into the Interface of each guest port it plugs.
_VM_ID: Final = "vm-id"


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
