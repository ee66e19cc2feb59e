"""The pure parts of the OVSDB backend: what a change still has to do, rows to models, and
rtnetlink link messages. No ovsdb-server here (tests/integration/test_ovsdb_backend.py has
the real one)."""

from __future__ import annotations

import socket
import struct
from types import SimpleNamespace
from typing import Any

import pytest

from kvmrec.backends.errors import BackendError, NotFound
from kvmrec.backends.ovs.client import Ovsdb
from kvmrec.backends.ovs.model import (
    DIGEST_KEY,
    OWNER_KEY,
    UNCHANGED,
    Bridge,
    BridgeChange,
    Port,
    bridge_from_row,
    minimal_change,
)
from kvmrec.backends.ovs.netlink import parse_link_messages


def port(name: str, kind: str = "", **ids: str) -> Port:
    return Port(name, kind, ids, name == "br0" or "vm-id" in ids, 1, None)


def bridge(**kw: Any) -> Bridge:
    base: dict[str, Any] = {
        "name": "br0",
        "datapath_type": "netdev",
        "fail_mode": "secure",
        "external_ids": {OWNER_KEY: "br0", DIGEST_KEY: "d1"},
        "ports": {"br0": port("br0", "internal"), "eth1": port("eth1")},
    }
    base.update(kw)
    return Bridge(**base)


# -- minimal_change ------------------------------------------------------------------------


def test_restating_the_current_state_is_empty() -> None:
    change = BridgeChange(
        "br0",
        create=True,
        datapath_type="netdev",
        fail_mode="secure",
        set_external_ids={OWNER_KEY: "br0"},
        remove_external_ids=["gone"],
        add_ports=[("eth1", "system")],
        remove_ports=["eth9"],
    )
    assert minimal_change(change, bridge(), {"br0": "br0", "eth1": "br0"}).empty


def test_only_differences_remain() -> None:
    change = BridgeChange(
        "br0",
        datapath_type="system",
        fail_mode=None,
        set_external_ids={OWNER_KEY: "br0", DIGEST_KEY: "d2"},
        remove_external_ids=[OWNER_KEY, "x"],  # set wins over remove
        add_ports=[("br0", "internal"), ("eth2", "internal"), ("eth2", "internal")],
        remove_ports=["eth1", "eth1", "eth7"],
    )
    todo = minimal_change(change, bridge(), {})
    assert todo == BridgeChange(
        "br0",
        datapath_type="system",
        fail_mode=None,
        set_external_ids={DIGEST_KEY: "d2"},
        add_ports=(("eth2", "internal"),),
        remove_ports=("eth1",),
    )


def test_changing_a_port_type_is_remove_and_add() -> None:
    change = BridgeChange("br0", remove_ports=("eth1",), add_ports=(("eth1", "internal"),))
    assert minimal_change(change, bridge(), {"eth1": "br0"}) == change


def test_a_missing_bridge_is_created_or_not_found() -> None:
    with pytest.raises(NotFound):
        minimal_change(BridgeChange("br0", fail_mode="secure"), None, {})
    todo = minimal_change(
        BridgeChange("br0", create=True, datapath_type="", add_ports=[("br0", "internal")]),
        None,
        {},
    )
    # The default datapath needs no setting, and the bridge's own port comes with it.
    assert todo == BridgeChange("br0", create=True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            BridgeChange("br0", add_ports=[("eth5", "")]), "on bridge br1", id="port-elsewhere"
        ),
        pytest.param(BridgeChange("br0", remove_ports=["br0"]), "own port", id="own-port"),
    ],
)
def test_changes_that_cannot_be_made(change: BridgeChange, message: str) -> None:
    with pytest.raises(BackendError, match=message):
        minimal_change(change, bridge(), {"eth5": "br1"})


def test_fail_mode_unchanged_is_not_none() -> None:
    assert BridgeChange("br0").fail_mode is UNCHANGED
    assert BridgeChange("br0").empty
    assert not BridgeChange("br0", fail_mode=None).empty
    assert minimal_change(BridgeChange("br0", fail_mode=None), bridge(fail_mode=None), {}).empty


# -- rows ----------------------------------------------------------------------------------


def row(**kw: Any) -> Any:
    return SimpleNamespace(**kw)


def iface(
    name: str, kind: str = "", ofport: list[int] | None = None, ids: dict[str, str] | None = None
) -> Any:
    return row(name=name, type=kind, external_ids=ids or {}, ofport=ofport or [], error=[])


def test_bridge_from_row() -> None:
    vnet = iface("vnet3", ids={"vm-id": "abc", "iface-id": "i"})
    bad = iface("eth9", "system", [-1])
    bad.error = ["could not open network device eth9 (No such device)"]
    br = row(
        name="br0",
        datapath_type="netdev",
        fail_mode=["secure"],
        external_ids={OWNER_KEY: "br0"},
        ports=[
            row(name="br0", interfaces=[iface("br0", "internal", [65534])]),
            row(name="vnet3", interfaces=[vnet]),
            row(name="eth9", interfaces=[bad]),
            row(name="bond0", interfaces=[iface("eth1", ofport=[3]), iface("eth2", ofport=[4])]),
        ],
    )
    model = bridge_from_row(br)
    assert model.fail_mode == "secure"
    assert model.ports["br0"] == Port("br0", "internal", {}, True, 65534, None)
    assert model.ports["vnet3"].derived
    assert model.ports["vnet3"].ofport is None
    # "system" and "" both mean a device of the host.
    assert model.ports["eth9"] == Port("eth9", "", {}, False, -1, bad.error[0])
    assert model.ports["bond0"].ofport == 3
    assert bridge_from_row(row(**{**vars(br), "fail_mode": []})).fail_mode is None


# -- rtnetlink -----------------------------------------------------------------------------


def link_message(kind: int, name: str, flags: int) -> bytes:
    raw = name.encode() + b"\0"
    attr = struct.pack("=HH", 4 + len(raw), 3) + raw
    attr += b"\0" * (-len(attr) % 4)
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 1, 7, flags, 0xFFFFFFFF) + attr
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


def test_parse_link_messages() -> None:
    data = (
        link_message(16, "br0", 0x1103)
        + link_message(16, "eth0", 0x1003)
        + struct.pack("=IHHII", 20, 24, 0, 0, 0)  # an address message: not a link
        + b"\0" * 4
        + link_message(17, "vnet3", 0x1002)
    )
    assert parse_link_messages(data) == [("br0", True), ("eth0", False), ("vnet3", None)]
    assert parse_link_messages(data[:10]) == []


@pytest.mark.parametrize("name", ["", "../eth0", "a/b", "x" * 16, "a b", ".."])
def test_device_names_that_cannot_exist(name: str) -> None:
    assert Ovsdb.promiscuous(name) is None
    with pytest.raises(NotFound):
        Ovsdb().set_promiscuous(name, True)


def test_no_such_device() -> None:
    assert Ovsdb.promiscuous("kvmrec-none0") is None
    with pytest.raises(NotFound):
        Ovsdb().set_promiscuous("kvmrec-none0", True)
