"""What a backend must do where the reconcilers rely on it, checked alike on the real one
and on its fake (tests/support/fakes.py), so a fake cannot drift from what it stands for.

Each runs on its fake in tests/unit/backends/test_fakes.py, and on the real backend:
``check_snapshots`` on libvirt's test:///default there too, ``check_networks`` on
qemu:///system (tests/integration/test_networks.py), ``check_bridges`` on the real
ovsdb-server (tests/integration/test_ovsdb_backend.py).
"""

from __future__ import annotations

import pytest

from kvmrec.api.kinds import DhcpHost, NetworkSpec
from kvmrec.backends import network_xml, protocols
from kvmrec.backends.domain_xml import Owner
from kvmrec.backends.errors import BackendError, NotFound
from kvmrec.backends.ovs.model import OWNER_KEY, UNCHANGED, BridgeChange


def check_networks(nets: protocols.Networks, name: str, bridge: str, subnet: str) -> None:
    """One network through its life: absent, defined with a stamp, started, changed live,
    refused where libvirt refuses, stopped, undefined. ``subnet``: the first three octets
    of an IPv4 /24 of its own."""
    assert nets.get_network(name) is None
    assert nets.network_active(name) is None
    for call in (
        lambda: nets.network_xml(name),
        lambda: nets.start_network(name),
        lambda: nets.stop_network(name),
        lambda: nets.undefine_network(name),
        lambda: nets.set_network_autostart(name, True),
        lambda: nets.update_dhcp_host(
            name, f"<host mac='52:54:00:00:00:01' ip='{subnet}.5'/>", add=True, live=False
        ),
    ):
        with pytest.raises(NotFound):
            call()

    owner = Owner("Network", name, "uid-1", 1, "digest-1")
    spec = NetworkSpec(
        forward="isolated",
        bridge=bridge,
        address=f"{subnet}.1",
        prefix=24,
        dhcp_start=f"{subnet}.100",
        dhcp_end=f"{subnet}.200",
    )
    nets.define_network(network_xml.build(name, spec, owner))
    live = nets.get_network(name)
    assert live is not None
    assert live.config.owner == owner  # the stamp reads back
    assert (live.active, live.autostart, live.running) == (False, False, None)
    assert (live.config.forward, live.config.bridge, live.config.address) == (
        "isolated",
        spec.bridge,
        f"{subnet}.1",
    )
    assert live.config.uuid == network_xml.stable_uuid(name)
    assert nets.network_active(name) is False
    assert network_xml.parse(nets.network_xml(name)).owner == owner

    # Redefined under another UUID: refused; under its own, with another stamp: taken.
    with pytest.raises(BackendError) as refused:
        nets.define_network(
            network_xml.build(name, spec, owner, uuid="00000000-0000-4000-8000-000000000001")
        )
    assert not isinstance(refused.value, NotFound)
    newer = Owner("Network", name, "uid-1", 2, "digest-2")
    nets.define_network(network_xml.build(name, spec, newer, uuid=live.config.uuid))
    live = nets.get_network(name)
    assert live is not None and live.config.owner == newer

    nets.start_network(name)
    live = nets.get_network(name)
    assert live is not None and live.active and live.running is not None
    assert live.running.address == f"{subnet}.1"
    assert nets.network_active(name) is True
    with pytest.raises(BackendError) as refused:
        nets.start_network(name)  # already active
    assert not isinstance(refused.value, NotFound)

    host = DhcpHost(mac="52:54:00:00:00:01", ip=f"{subnet}.5", name="one")
    nets.update_dhcp_host(name, network_xml.host_xml(host), add=True, live=True)
    live = nets.get_network(name)
    assert live is not None and live.running is not None
    assert live.config.dhcp_hosts == (host,)
    assert live.running.dhcp_hosts == (host,)
    with pytest.raises(BackendError):
        nets.update_dhcp_host(name, network_xml.host_xml(host), add=True, live=True)
    nets.update_dhcp_host(name, network_xml.host_xml(host), add=False, live=True)
    live = nets.get_network(name)
    assert live is not None and live.config.dhcp_hosts == ()
    with pytest.raises(BackendError):
        nets.update_dhcp_host(name, network_xml.host_xml(host), add=False, live=True)

    nets.set_network_autostart(name, True)
    live = nets.get_network(name)
    assert live is not None and live.autostart

    nets.stop_network(name)
    nets.stop_network(name)  # stopped already: nothing to do
    live = nets.get_network(name)
    assert live is not None and not live.active and live.running is None
    nets.undefine_network(name)
    assert nets.get_network(name) is None
    assert nets.network_active(name) is None


def check_snapshots(host: protocols.SnapshotHost, name: str) -> None:
    """The snapshots of ``name``, a domain that is shut off: taken, read, refused where
    libvirt refuses, reverted to, deleted."""
    assert host.get_domain(f"{name}-none") is None
    with pytest.raises(NotFound):
        host.list_snapshots(f"{name}-none")
    with pytest.raises(NotFound):
        host.create_snapshot(f"{name}-none", "s1", "")
    live = host.get_domain(name)
    assert live is not None and not live.active
    assert host.list_snapshots(name) == []
    with pytest.raises(NotFound):
        host.get_snapshot(name, "s1")

    host.create_snapshot(name, "s1", "the first")
    taken = host.get_snapshot(name, "s1")
    assert (taken.name, taken.description, taken.state, taken.memory) == (
        "s1",
        "the first",
        "shutoff",
        False,
    )
    with pytest.raises(BackendError) as refused:
        host.create_snapshot(name, "s1", "again")
    assert not isinstance(refused.value, NotFound)
    host.create_snapshot(name, "s2", "the second")
    assert {s.name for s in host.list_snapshots(name)} == {"s1", "s2"}

    with pytest.raises(BackendError) as refused:
        host.freeze(name)  # nothing runs to freeze
    assert not isinstance(refused.value, NotFound)

    host.revert_snapshot(name, "s1", running=None)
    live = host.get_domain(name)
    assert live is not None and not live.active
    with pytest.raises(NotFound):
        host.revert_snapshot(name, "s9", running=None)

    host.delete_snapshot(name, "s1")
    with pytest.raises(NotFound):
        host.get_snapshot(name, "s1")
    with pytest.raises(NotFound):
        host.delete_snapshot(name, "s1")
    assert [s.name for s in host.list_snapshots(name)] == ["s2"]


def check_bridges(ovs: protocols.OvsBridges, name: str, datapath: str) -> None:
    """One bridge through its life: absent, created with a stamp and ports in one change,
    changed, refused where OVSDB refuses, unstamped, deleted."""
    assert ovs.get_bridge(name) is None
    with pytest.raises(NotFound):
        ovs.apply(BridgeChange(name, fail_mode="secure"))  # not there, not to be created
    ovs.delete_bridge(name)  # not there: nothing to do

    internal = f"{name}i"
    ovs.apply(
        BridgeChange(
            name,
            create=True,
            datapath_type=datapath,
            fail_mode="secure",
            set_external_ids={OWNER_KEY: f"OvsBridge/{name}", "site": "a"},
            add_ports=((internal, "internal"),),
        )
    )
    bridge = ovs.get_bridge(name)
    assert bridge is not None
    assert bridge.external_ids == {OWNER_KEY: f"OvsBridge/{name}", "site": "a"}
    assert (bridge.datapath_type, bridge.fail_mode) == (datapath, "secure")
    assert sorted(bridge.ports) == sorted([name, internal])
    own = bridge.ports[name]
    assert own.derived and own.type == "internal"  # the bridge's own port: not kvmrec's
    assert not bridge.ports[internal].derived and bridge.ports[internal].type == "internal"
    assert bridge.ports[internal].error is None

    ovs.apply(
        BridgeChange(
            name,
            fail_mode=None,
            set_external_ids={"site": "b"},
            remove_external_ids=("missing",),
            remove_ports=(internal,),
        )
    )
    bridge = ovs.get_bridge(name)
    assert bridge is not None
    assert bridge.fail_mode is None
    assert bridge.external_ids == {OWNER_KEY: f"OvsBridge/{name}", "site": "b"}
    assert sorted(bridge.ports) == [name]

    with pytest.raises(BackendError) as refused:
        ovs.apply(BridgeChange(name, remove_ports=(name,)))  # its own port
    assert not isinstance(refused.value, NotFound)

    ovs.apply(BridgeChange(name, fail_mode=UNCHANGED, remove_external_ids=(OWNER_KEY,)))
    bridge = ovs.get_bridge(name)
    assert bridge is not None and OWNER_KEY not in bridge.external_ids

    assert ovs.promiscuous(f"{name}zz") is None
    with pytest.raises(NotFound):
        ovs.set_promiscuous(f"{name}zz", True)

    ovs.delete_bridge(name)
    assert ovs.get_bridge(name) is None
