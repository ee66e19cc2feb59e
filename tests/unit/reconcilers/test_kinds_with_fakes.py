"""The Network and OvsBridge kinds through the generic reconcile layer, on in-memory fakes.

The fakes (tests/support/fakes.py) hold what libvirt and OVSDB would (a network's XML and
run state; a bridge's row with its ports) and can be taken down: every call then raises
``Unavailable`` as the real backends do when their daemon is away. What is asserted is what
the layer promises for every kind: a conflict is left alone and said so, a failure is
recorded in status before the engine retries, deletion follows ``deletionPolicy`` and waits
for the objects that use what it would delete.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmrec import store as stores
from kvmrec.api import manifests
from kvmrec.api.kinds import ObjectKey
from kvmrec.backends.errors import Unavailable
from kvmrec.backends.ovs.model import Bridge, Port
from kvmrec.engine.clock import FakeClock
from kvmrec.engine.contract import PermanentError, Result
from kvmrec.reconcilers.dependencies import IN_USE_RETRY, Dependencies
from kvmrec.reconcilers.network import NetworkReconciler
from kvmrec.reconcilers.ovsbridge import STAMP_KEYS, OvsBridgeReconciler
from kvmrec.reconcilers.plans import Step
from kvmrec.store.base import Store
from kvmrec.store.records import Status
from support.fakes import FakeNetworks, FakeOvsBridges

T0 = datetime(2024, 3, 4, 5, 0, tzinfo=UTC)
F = TypeVar("F", bound=Callable[..., Any])


def transactions(ovs: FakeOvsBridges) -> int:
    """How many transactions changed OVSDB."""
    return sum(1 for call in ovs.calls if call[0] == "apply")


@dataclass
class World:
    store: Store
    clock: FakeClock
    nets: FakeNetworks
    ovs: FakeOvsBridges
    networks: NetworkReconciler
    bridges: OvsBridgeReconciler
    steps: list[tuple[ObjectKey, Step]]  # every step acted on

    def apply(self, kind: str, name: str, spec: dict[str, Any], **meta: Any) -> ObjectKey:
        document = {
            "apiVersion": "kvmrec.io/v1alpha1",
            "kind": kind,
            "metadata": {"name": name, **meta},
            "spec": spec,
        }
        (manifest,) = manifests.parse_file(f"{name}.yaml", yaml.safe_dump(document).encode())
        self.store.apply(manifest, self.clock.wall())
        return manifest.key

    def delete(self, key: ObjectKey) -> None:
        assert self.store.mark_deleting(key, self.clock.wall())

    def status(self, key: ObjectKey) -> Status:
        status = self.store.get_status(key)
        assert status is not None
        return status

    def condition(self, key: ObjectKey, type_: str) -> tuple[str, str]:
        cond = self.status(key).condition(type_)
        assert cond is not None, type_
        return cond.status, cond.reason

    def reasons(self, key: ObjectKey) -> list[str]:
        return [e.reason for e in self.store.events(key, limit=1000)]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with _world(tmp_path) as made:
        yield made


@contextlib.contextmanager
def _world(tmp_path: Path) -> Iterator[World]:
    store = stores.open(tmp_path / "state.db")
    clock = FakeClock(wall=T0)
    nets, ovs = FakeNetworks(), FakeOvsBridges(kernel=True)
    deps = Dependencies(store, nets.network_active, lambda name: name in ovs.bridges)
    steps: list[tuple[ObjectKey, Step]] = []

    def on_step(key: ObjectKey, step: Step) -> None:
        steps.append((key, step))

    try:
        yield World(
            store,
            clock,
            nets,
            ovs,
            NetworkReconciler(store, nets, clock, deps, on_step=on_step),
            OvsBridgeReconciler(store, ovs, clock, deps, on_step=on_step),
            steps,
        )
    finally:
        store.close()


NAT = {
    "forward": "nat",
    "ip": {"address": "10.9.0.1", "prefix": 24, "dhcp": {"start": "10.9.0.10", "end": "10.9.0.99"}},
}
UNOWNED = (
    "<network><name>{name}</name><forward mode='nat'/><bridge name='virbr9'/>"
    "<ip address='10.8.0.1' netmask='255.255.255.0'/></network>"
)


# -- Network --------------------------------------------------------------------------------


def test_network_is_created_started_and_reported(world: World) -> None:
    key = world.apply("Network", "lab", NAT)
    assert world.networks.reconcile(key) == Result()
    assert world.nets.networks["lab"].active and world.nets.networks["lab"].autostart
    assert world.condition(key, "Ready") == ("True", "Active")
    assert world.condition(key, "Synced") == ("True", "Synced")
    assert world.status(key).observed_generation == 1
    assert {"Created", "Started", "Autostart"} <= set(world.reasons(key))
    obj = world.store.get(key)
    assert obj is not None and world.networks.plan(obj).visible == []


def test_network_of_the_same_name_not_kvmrecs_is_a_conflict_and_left_alone(world: World) -> None:
    world.nets.add_network(UNOWNED.format(name="lab"))
    key = world.apply("Network", "lab", NAT)
    with pytest.raises(PermanentError, match="not managed by kvmrec"):
        world.networks.reconcile(key)
    assert world.nets.calls == [], "nothing done to it"
    assert world.condition(key, "Synced") == ("False", "Conflict")
    obj = world.store.get(key)
    assert obj is not None
    assert [s.action for s in world.networks.plan(obj).steps] == ["conflict"]

    # Removing the manifest forgets it and leaves the network as it is.
    world.delete(key)
    assert world.networks.reconcile(key) == Result()
    assert "lab" in world.nets.networks and world.nets.calls == []
    assert world.store.get(key) is None
    assert world.reasons(key)[-1] == "NotOwned"


def test_network_daemon_away_is_recorded_in_status(world: World) -> None:
    key = world.apply("Network", "lab", NAT)
    world.nets.unavailable = True
    with pytest.raises(Unavailable):
        world.networks.reconcile(key)
    assert world.condition(key, "Ready") == ("Unknown", "LibvirtUnavailable")
    status = world.status(key)
    assert status.retries == 1 and "connection refused" in (status.last_error or "")

    world.nets.unavailable = False
    world.networks.reconcile(key)
    assert world.condition(key, "Ready") == ("True", "Active")
    assert world.status(key).retries == 0


def test_a_network_applied_again_while_it_is_deleted_is_kept_and_made_again(
    world: World,
) -> None:
    key = world.apply("Network", "lab", NAT)
    world.networks.reconcile(key)
    world.delete(key)
    undefine = world.nets.undefine_network

    def undefine_then_apply(name: str) -> None:
        undefine(name)
        world.apply("Network", "lab", NAT)  # the manifest is back, from the next scan

    world.nets.undefine_network = undefine_then_apply  # type: ignore[method-assign]
    # Deleted as asked, but its object is kept: the reconcile that follows at once...
    assert world.networks.reconcile(key) == Result(requeue_after=0.0)
    obj = world.store.get(key)
    assert obj is not None and not obj.deleting
    assert "Deleted" in world.reasons(key)
    assert "lab" not in world.nets.networks
    # ... makes it again.
    assert world.networks.reconcile(key) == Result()
    assert world.nets.networks["lab"].active
    assert world.condition(key, "Ready") == ("True", "Active")


def test_network_deletion_waits_for_a_domain_that_uses_it_then_deletes(world: World) -> None:
    key = world.apply("Network", "lab", NAT)
    world.networks.reconcile(key)
    guest = world.apply(
        "Domain",
        "web",
        {"vcpus": 1, "memory": "64Mi", "interfaces": [{"name": "eth0", "network": "lab"}]},
    )
    world.delete(key)
    assert world.networks.reconcile(key) == Result(requeue_after=IN_USE_RETRY)
    assert world.condition(key, "Synced") == ("False", "InUse")
    cond = world.status(key).condition("Synced")
    assert cond is not None and "Domain/web" in cond.message
    assert world.nets.networks["lab"].active, "still there while it is used"

    world.store.mark_deleting(guest, world.clock.wall())
    world.store.remove(guest)
    assert world.networks.reconcile(key) == Result()
    assert "lab" not in world.nets.networks
    assert world.store.get(key) is None
    assert world.reasons(key)[-1] == "Deleted"


def test_network_with_deletion_policy_orphan_is_unstamped_and_kept(world: World) -> None:
    key = world.apply("Network", "lab", {**NAT, "deletionPolicy": "Orphan"})
    world.networks.reconcile(key)
    world.delete(key)
    assert world.networks.reconcile(key) == Result()
    live = world.nets.get_network("lab")
    assert live is not None and live.active and live.config.owner is None
    assert world.reasons(key)[-1] == "Orphaned"


def test_network_adopted_when_the_manifest_asks(world: World) -> None:
    world.nets.add_network(UNOWNED.format(name="lab"), active=True)
    key = world.apply(
        "Network",
        "lab",
        {"active": True, "autostart": False},
        annotations={"kvmrec.io/adopt": "true"},
    )
    world.networks.reconcile(key)
    live = world.nets.get_network("lab")
    assert live is not None and live.config.owner is not None and live.config.owner.adopted
    assert "Adopted" in world.reasons(key)
    assert world.condition(key, "Ready") == ("True", "Active")


# -- OvsBridge ------------------------------------------------------------------------------


BRIDGE = {"ports": [{"name": "up0", "type": "internal"}], "failMode": "standalone"}


def test_bridge_is_created_in_one_transaction_and_reported(world: World) -> None:
    key = world.apply("OvsBridge", "br-lab", BRIDGE)
    assert world.bridges.reconcile(key) == Result()
    bridge = world.ovs.bridges["br-lab"]
    assert set(bridge.ports) == {"br-lab", "up0"}
    assert bridge.fail_mode == "standalone"
    assert bridge.external_ids["kvmrec-owner"] == "OvsBridge/br-lab"
    assert transactions(world.ovs) == 1
    assert world.condition(key, "Ready") == ("True", "Ready")
    assert world.condition(key, "Synced") == ("True", "Synced")
    assert [s.action for k, s in world.steps if k == key] == ["create", "add-ports"]
    obj = world.store.get(key)
    assert obj is not None and world.bridges.plan(obj).steps == ()


def test_bridge_not_kvmrecs_is_a_conflict_and_deleting_it_forgets_it(world: World) -> None:
    world.ovs.bridges["br-lab"] = Bridge("br-lab", "", None, {"owner": "someone"}, {})
    world.ovs.promisc["br-lab"] = False
    key = world.apply("OvsBridge", "br-lab", BRIDGE)
    with pytest.raises(PermanentError, match="bridge named br-lab exists and is not managed"):
        world.bridges.reconcile(key)
    assert world.condition(key, "Synced") == ("False", "Conflict")
    assert transactions(world.ovs) == 0
    world.delete(key)
    assert world.bridges.reconcile(key) == Result()
    assert world.ovs.bridges["br-lab"].external_ids == {"owner": "someone"}
    assert world.reasons(key)[-1] == "NotOwned"


def test_ovsdb_away_is_recorded_in_status(world: World) -> None:
    key = world.apply("OvsBridge", "br-lab", BRIDGE)
    world.ovs.unavailable = True
    with pytest.raises(Unavailable):
        world.bridges.reconcile(key)
    assert world.condition(key, "Ready") == ("Unknown", "OvsdbUnavailable")
    assert world.status(key).retries == 1


def test_bridge_deletion_waits_for_a_network_on_it_then_deletes(world: World) -> None:
    key = world.apply("OvsBridge", "br-lab", BRIDGE)
    world.bridges.reconcile(key)
    net = world.apply(
        "Network", "on-br", {"forward": "bridge", "bridge": "br-lab", "virtualport": "openvswitch"}
    )
    world.delete(key)
    assert world.bridges.reconcile(key) == Result(requeue_after=IN_USE_RETRY)
    cond = world.status(key).condition("Synced")
    assert cond is not None and cond.reason == "InUse" and "Network/on-br" in cond.message
    world.store.mark_deleting(net, world.clock.wall())
    world.store.remove(net)
    assert world.bridges.reconcile(key) == Result()
    assert "br-lab" not in world.ovs.bridges
    assert world.reasons(key)[-1] == "Deleted"


def test_bridge_with_deletion_policy_orphan_loses_only_the_stamp(world: World) -> None:
    spec = {**BRIDGE, "externalIds": {"team": "a"}, "deletionPolicy": "Orphan"}
    key = world.apply("OvsBridge", "br-lab", spec)
    world.bridges.reconcile(key)
    world.delete(key)
    assert world.bridges.reconcile(key) == Result()
    bridge = world.ovs.bridges["br-lab"]
    assert not set(STAMP_KEYS) & set(bridge.external_ids)
    assert bridge.external_ids["team"] == "a" and "up0" in bridge.ports
    assert world.store.get(key) is None
    assert world.reasons(key)[-1] == "Orphaned"


# -- plan == reconcile ------------------------------------------------------------------------
# As test_plan_is_reconcile.py does for the kinds on test:///default: for generated desired
# and live state, the plan lists exactly the steps the next reconcile acts on.

EXAMPLES = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _check(world: World, reconciler: Any, key: ObjectKey) -> None:
    obj = world.store.get(key)
    assert obj is not None
    plan = reconciler.plan(obj, world.store.get_status(key))
    world.steps.clear()
    with contextlib.suppress(PermanentError):
        reconciler.reconcile(key)
    done = [s for k, s in world.steps if k == key and s.visible]
    kind = reconciler.of
    if plan.blocked is not None or plan.wait_reason in kind.waits | kind.quiet_waits:
        assert done == [], (plan, done)
    else:
        assert done == plan.visible, (plan.visible, done)


net_specs = st.fixed_dictionaries({"active": st.booleans(), "autostart": st.booleans()})


@EXAMPLES
@given(
    before=st.one_of(st.none(), st.just("by-hand"), net_specs),
    hand=st.sampled_from(["nothing", "stop", "start", "autostart"]),
    adopt=st.booleans(),
    desired=net_specs,
    orphan=st.booleans(),
    used=st.booleans(),
    deleting=st.booleans(),
)
def test_network_plan_is_what_the_reconcile_does(
    tmp_path_factory: pytest.TempPathFactory,
    before: dict[str, Any] | str | None,
    hand: str,
    adopt: bool,
    desired: dict[str, Any],
    orphan: bool,
    used: bool,
    deleting: bool,
) -> None:
    with _world(tmp_path_factory.mktemp("net")) as world:
        policy = {"deletionPolicy": "Orphan" if orphan else "Delete"}
        if before == "by-hand":
            world.nets.add_network(UNOWNED.format(name="lab"), active=True)
        elif isinstance(before, dict):
            world.networks.reconcile(world.apply("Network", "lab", NAT | before | policy))
        net = world.nets.networks.get("lab")
        if net is not None and hand in ("stop", "start"):
            net.active = hand == "start"
            net.running = net.xml if net.active else None
        elif net is not None and hand == "autostart":
            net.autostart = not net.autostart
        if used:
            iface = {"name": "eth0", "network": "lab"}
            world.apply("Domain", "web", {"vcpus": 1, "memory": "64Mi", "interfaces": [iface]})
        meta = {"annotations": {"kvmrec.io/adopt": "true"}} if adopt else {}
        world.clock.advance(1)
        key = world.apply("Network", "lab", NAT | desired | policy, **meta)
        if deleting:
            world.delete(key)
        _check(world, world.networks, key)


bridge_specs = st.fixed_dictionaries(
    {
        "ports": st.lists(st.sampled_from(["up0", "up1"]), unique=True).map(
            lambda names: [{"name": n, "type": "internal"} for n in names]
        ),
        "failMode": st.sampled_from(["standalone", "secure"]),
        "externalIds": st.dictionaries(st.sampled_from(["team", "site"]), st.sampled_from("ab")),
    }
)


@EXAMPLES
@given(
    before=st.one_of(st.none(), st.just("by-hand"), bridge_specs),
    hand=st.sampled_from(["nothing", "stray-port", "fail-mode", "drop-ports"]),
    adopt=st.booleans(),
    desired=bridge_specs,
    orphan=st.booleans(),
    deleting=st.booleans(),
)
def test_bridge_plan_is_what_the_reconcile_does(
    tmp_path_factory: pytest.TempPathFactory,
    before: dict[str, Any] | str | None,
    hand: str,
    adopt: bool,
    desired: dict[str, Any],
    orphan: bool,
    deleting: bool,
) -> None:
    with _world(tmp_path_factory.mktemp("br")) as world:
        policy = {"deletionPolicy": "Orphan" if orphan else "Delete"}
        if before == "by-hand":
            world.ovs.bridges["br-lab"] = Bridge("br-lab", "", None, {}, {})
            world.ovs.promisc["br-lab"] = False  # its device is there
        elif isinstance(before, dict):
            world.bridges.reconcile(world.apply("OvsBridge", "br-lab", before | policy))
        bridge = world.ovs.bridges.get("br-lab")
        if bridge is not None and hand == "stray-port":
            stray = Port("eth9", "", {}, False, 9, None)
            world.ovs.bridges["br-lab"] = replace(bridge, ports={**bridge.ports, "eth9": stray})
        elif bridge is not None and hand == "fail-mode":
            world.ovs.bridges["br-lab"] = replace(bridge, fail_mode="secure")
        elif bridge is not None and hand == "drop-ports":
            world.ovs.bridges["br-lab"] = replace(bridge, ports={})
        meta = {"annotations": {"kvmrec.io/adopt": "true"}} if adopt else {}
        world.clock.advance(1)
        key = world.apply("OvsBridge", "br-lab", desired | policy, **meta)
        if deleting:
            world.delete(key)
        _check(world, world.bridges, key)


def test_on_done_is_told_what_the_reconcile_read_and_wrote(world: World) -> None:
    told: list[tuple[ObjectKey, bool, Status | None, Status | None]] = []
    world.networks.on_done = lambda key, obj, old, new: told.append(
        (key, obj is not None, old, new)
    )
    key = world.apply("Network", "lab", NAT)
    world.networks.reconcile(key)
    ((_, found, old, new),) = told
    assert found and old is None
    assert new is not None and new.is_true("Ready") and new == world.status(key)

    world.nets.unavailable = True
    with pytest.raises(Unavailable):
        world.networks.reconcile(key)
    assert told[-1][2] == new, "the status as it was read"
    assert told[-1][3] == world.status(key), "the failure it recorded"

    world.nets.unavailable = False
    world.delete(key)
    world.networks.reconcile(key)
    assert told[-1][1] and told[-1][3] is None, "removed: no status"
    world.networks.reconcile(key)
    assert told[-1] == (key, False, None, None), "not in the store"


# -- placement fields on a single host ------------------------------------------------------

HOST_SELECTOR = {"hostSelector": {"matchLabels": {"zone": "b"}}}


@pytest.mark.parametrize(
    ("kind", "spec"),
    [pytest.param("Network", NAT, id="network"), pytest.param("OvsBridge", {}, id="bridge")],
)
def test_a_host_selector_plans_nothing_on_a_single_host(
    world: World, kind: str, spec: dict[str, Any]
) -> None:
    """The fleet's field is not libvirt or OVSDB state: not planned, not drift."""
    reconciler: Any = world.networks if kind == "Network" else world.bridges
    key = world.apply(kind, "lab", spec | HOST_SELECTOR)
    obj = world.store.get(key)
    assert obj is not None
    plain = replace(obj, spec={k: v for k, v in obj.spec.items() if k != "hostSelector"})
    assert reconciler.plan(obj).visible == reconciler.plan(plain).visible
    reconciler.reconcile(key)
    world.apply(kind, "lab", spec)  # converged without it; the field added and removed
    world.apply(kind, "lab", spec | HOST_SELECTOR)
    obj = world.store.get(key)
    assert obj is not None and obj.generation == 3
    assert reconciler.plan(obj).visible == []
    world.clock.advance(1)
    reconciler.reconcile(key)
    assert world.status(key).drift == ()
    assert world.condition(key, "Synced") == ("True", "Synced")
