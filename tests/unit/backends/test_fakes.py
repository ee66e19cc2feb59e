"""The in-memory fakes (tests/support/fakes.py) do what the real backends do where the
reconcilers rely on it, and fail on demand as the real ones fail in an outage.

Each fake is held to the checks of tests/support/contracts.py that the real backend passes:
snapshots here, side by side with libvirt's test:///default; networks on qemu:///system in
tests/integration/test_networks.py (the test driver reads no inactive network XML); bridges
on the real ovsdb-server in tests/integration/test_ovsdb_backend.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import libvirt
import pytest

from kvmrec.backends import protocols
from kvmrec.backends.errors import BackendError, NotFound, Unavailable
from kvmrec.backends.libvirt.hypervisor import Hypervisor
from kvmrec.backends.ovs.model import BridgeChange
from support import contracts, fakes


@pytest.fixture(params=["fake", "test:///default"])
def snapshots(request: pytest.FixtureRequest) -> Iterator[tuple[protocols.SnapshotHost, str]]:
    name = f"kf-{uuid.uuid4().hex[:6]}"
    if request.param == "fake":
        fake = fakes.FakeSnapshots()
        fake.add_domain(name)
        yield fake, name
        return
    conn = libvirt.open(request.param)
    conn.defineXML(
        f"<domain type='test'><name>{name}</name><memory>65536</memory>"
        "<os><type>hvm</type></os></domain>"
    )
    hv = Hypervisor(request.param)
    hv.open()
    try:
        yield hv, name
    finally:
        hv.close()
        conn.lookupByName(name).undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
        conn.close()


def test_snapshots_behave_like_libvirts(snapshots: tuple[protocols.SnapshotHost, str]) -> None:
    contracts.check_snapshots(*snapshots)


def test_a_quiesced_snapshot_needs_a_running_guest_with_an_agent() -> None:
    fake = fakes.FakeSnapshots()
    fake.add_domain("quiet", running=True)
    fake.add_domain("talks", running=True, agent=True)
    with pytest.raises(BackendError, match="not responding"):
        fake.freeze("quiet")
    assert fake.freeze("talks") == 1
    fake.create_snapshot("talks", "s1", "")
    fake.thaw("talks")
    taken = fake.get_snapshot("talks", "s1")
    assert taken.memory and taken.state == "running"
    assert fake.calls == [
        ("freeze", "talks"),
        ("create_snapshot", "talks", "s1"),
        ("thaw", "talks"),
    ]


def test_networks_behave_like_libvirts() -> None:
    contracts.check_networks(fakes.FakeNetworks(), "kf-net", "kf-br", "10.9.0")


def test_bridges_behave_like_ovsdbs() -> None:
    contracts.check_bridges(fakes.FakeOvsBridges(), "ktfake", "netdev")


def test_an_outage_makes_every_network_call_unavailable_until_it_ends() -> None:
    nets = fakes.FakeNetworks()
    nets.define_network("<network><name>n1</name></network>")
    nets.unavailable = True
    for call in (
        lambda: nets.get_network("n1"),
        lambda: nets.network_active("n1"),
        lambda: nets.network_xml("n1"),
        lambda: nets.define_network("<network><name>n2</name></network>"),
        lambda: nets.start_network("n1"),
        lambda: nets.stop_network("n1"),
        lambda: nets.set_network_autostart("n1", True),
        lambda: nets.undefine_network("n1"),
    ):
        with pytest.raises(Unavailable):
            call()
    nets.unavailable = False
    assert nets.network_active("n1") is False
    assert nets.calls == [("define_network", "n1")]  # nothing was done meanwhile


def test_an_outage_of_ovsdb_leaves_the_kernels_side_answering() -> None:
    ovs = fakes.FakeOvsBridges(kernel=True)
    ovs.apply(BridgeChange("br0", create=True, datapath_type="netdev"))
    ovs.unavailable = True
    for call in (
        lambda: ovs.get_bridge("br0"),
        lambda: ovs.apply(BridgeChange("br0", fail_mode="secure")),
        lambda: ovs.delete_bridge("br0"),
    ):
        with pytest.raises(Unavailable):
            call()
    # The promiscuous flag and the datapath are the kernel's: as on a real host, they do
    # not go through ovsdb-server.
    assert ovs.kernel_datapath() is True
    assert ovs.promiscuous("br0") is True
    ovs.set_promiscuous("br0", False)
    assert ovs.promiscuous("br0") is False
    ovs.unavailable = False
    assert ovs.get_bridge("br0") is not None


def test_one_operation_fails_once_on_demand() -> None:
    nets = fakes.FakeNetworks()
    nets.define_network("<network><name>n1</name></network>")
    nets.fail("start_network", BackendError("start network n1: internal error"))
    with pytest.raises(BackendError, match="internal error"):
        nets.start_network("n1")
    nets.start_network("n1")
    assert nets.network_active("n1") is True


def test_a_system_port_without_its_device_has_ovs_error() -> None:
    ovs = fakes.FakeOvsBridges(devices=("eth1",))
    ovs.apply(BridgeChange("br0", create=True, add_ports=(("eth1", "system"), ("eth9", ""))))
    bridge = ovs.get_bridge("br0")
    assert bridge is not None
    assert bridge.ports["eth1"].error is None and (bridge.ports["eth1"].ofport or 0) > 0
    assert bridge.ports["eth9"].ofport == -1
    assert "No such device" in (bridge.ports["eth9"].error or "")


def test_guest_ports_are_derived_and_cannot_be_added_elsewhere() -> None:
    ovs = fakes.FakeOvsBridges()
    ovs.apply(BridgeChange("br0", create=True))
    ovs.apply(BridgeChange("br1", create=True))
    ovs.plug_guest_port("br0", "vnet0", "guest-uuid")
    bridge = ovs.get_bridge("br0")
    assert bridge is not None and bridge.ports["vnet0"].derived
    with pytest.raises(BackendError, match="already on bridge br0"):
        ovs.apply(BridgeChange("br1", add_ports=(("vnet0", "system"),)))
    with pytest.raises(NotFound):
        ovs.apply(BridgeChange("br2", fail_mode="secure"))
