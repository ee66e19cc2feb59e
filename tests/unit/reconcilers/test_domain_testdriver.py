"""The Domain reconciler against libvirt's in-process ``test:///default`` driver.

That driver's state is shared by every connection in the process, so every domain made here
is named ``ut-<random>-...`` and removed again by the fixtures, whatever the test did
(testdriver.py).
"""

from __future__ import annotations

import itertools
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest
import testdriver
from hypothesis import given, settings
from hypothesis import strategies as st
from testdriver import INACTIVE, URI, new_prefix, remove_domains

from kvmrec.api import quantities
from kvmrec.api.domain_parts import Cpu, CpuFeature, Disk
from kvmrec.api.kinds import ADOPT_ANNOTATION, DomainSpec, Manifest, ObjectKey
from kvmrec.backends import domain_xml
from kvmrec.backends.domain_xml import DomainConfig, Owner
from kvmrec.engine.workers import PermanentError, Result
from kvmrec.reconcilers.domain import DomainReconciler, diff_config

BASE_SPEC: dict[str, Any] = {
    "type": "kvm",
    "vcpus": 1,
    "memory": "64Mi",
    "runStrategy": "Always",
    "autostart": False,
    "console": "serial",
    "disks": [],
    "deletionPolicy": "Delete",
}


@dataclass
class World(testdriver.World):
    reconciler: DomainReconciler
    images: Path

    def image(self, name: str) -> str:
        """A real 16 MiB qcow2 image: a disk must exist, or be creatable, to be defined."""
        path = self.images / name
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"], check=True, timeout=30
        )
        return str(path)

    def apply(self, name: str, annotations: dict[str, str] | None = None, **spec: Any) -> ObjectKey:
        manifest = Manifest(
            "Domain", name, BASE_SPEC | spec, f"{name}.yaml", 1, annotations=annotations or {}
        )
        self.store.apply(manifest, self.clock.wall())
        return manifest.key

    def reconcile(self, key: ObjectKey) -> Result:
        self.clock.advance(1)
        return self.reconciler.reconcile(key)


@pytest.fixture
def world(tmp_path: Path, conn: Any) -> Iterator[World]:
    with testdriver.opened(tmp_path, conn) as w:
        yield World(
            w.prefix,
            conn,
            w.store,
            w.hv,
            w.clock,
            DomainReconciler(w.store, w.hv, w.clock, stop_grace=0),
            tmp_path,
        )


# -- create and keep running -----------------------------------------------------------------


def test_create_defines_starts_sets_autostart_and_stamps(world: World) -> None:
    name = world.name("web")
    key = world.apply(name, autostart=True, vcpus=2, memory="96Mi")
    assert world.reconcile(key) == Result()

    assert world.exists(name)
    assert world.running(name)
    assert world.dom(name).autostart() == 1
    obj = world.store.get(key)
    assert obj is not None
    config = world.config(name)
    assert config.owner == Owner("Domain", name, obj.uid, 1, obj.digest)
    assert domain_xml.parse(world.dom(name).XMLDesc(0)).owner == config.owner
    assert (config.vcpus, config.memory, config.uuid) == (
        2,
        96 * 1024**2,
        domain_xml.stable_uuid(name),
    )

    status = world.status(key)
    assert status.observed_generation == 1
    assert status.is_true("Ready") and status.is_true("Synced")
    assert status.condition("Ready").reason == "Running"  # type: ignore[union-attr]
    assert status.drift == ()
    assert status.last_error is None
    assert status.last_reconcile_time == world.clock.wall()
    assert status.details["state"] == "running"
    assert world.reasons(key)[:3] == ["Created", "Autostart", "Started"]


def test_a_second_reconcile_of_a_converged_domain_does_nothing(world: World) -> None:
    name = world.name("web")
    key = world.apply(name)
    world.reconcile(key)
    xml = world.dom(name).XMLDesc(INACTIVE)
    events = len(world.store.events(key))
    world.reconcile(key)
    assert world.dom(name).XMLDesc(INACTIVE) == xml
    assert len(world.store.events(key)) == events
    assert world.status(key).is_true("Synced")


def test_a_guest_destroyed_by_hand_is_started_again(world: World) -> None:
    name = world.name("web")
    key = world.apply(name)
    world.reconcile(key)
    world.dom(name).destroy()
    assert not world.running(name)

    world.reconcile(key)
    assert world.running(name)
    last = world.store.events(key)[-1]
    assert (last.reason, last.type) == ("Started", "Normal")
    assert "shutoff" in last.message
    assert world.status(key).is_true("Ready")


def test_a_paused_guest_is_resumed(world: World) -> None:
    name = world.name("web")
    key = world.apply(name)
    world.reconcile(key)
    world.dom(name).suspend()
    world.reconcile(key)
    assert world.running(name)
    assert "Resumed" in world.reasons(key)


def test_autostart_turned_off_by_hand_is_set_again(world: World) -> None:
    name = world.name("web")
    key = world.apply(name, autostart=True)
    world.reconcile(key)
    world.dom(name).setAutostart(0)
    world.reconcile(key)
    assert world.dom(name).autostart() == 1


# -- run strategies --------------------------------------------------------------------------


def test_halted_stops_a_running_guest(world: World) -> None:
    name = world.name("web")
    key = world.apply(name)
    world.reconcile(key)
    assert world.running(name)

    world.apply(name, runStrategy="Halted")
    world.reconcile(key)
    assert not world.running(name)
    assert "Stopped" in world.reasons(key)
    status = world.status(key)
    assert (status.observed_generation, status.condition("Ready").reason) == (2, "Halted")  # type: ignore[union-attr]
    assert status.is_true("Ready") and status.is_true("Synced")

    world.dom(name).create()  # started by hand: stopped again
    world.reconcile(key)
    assert not world.running(name)


def test_halted_from_the_start_defines_without_starting(world: World) -> None:
    name = world.name("web")
    key = world.apply(name, runStrategy="Halted")
    world.reconcile(key)
    assert world.exists(name)
    assert not world.running(name)
    assert "Started" not in world.reasons(key)


def test_manual_leaves_the_run_state_alone(world: World) -> None:
    name = world.name("web")
    key = world.apply(name, runStrategy="Manual")
    world.reconcile(key)
    assert world.exists(name) and not world.running(name)
    status = world.status(key)
    assert status.is_true("Ready") and status.is_true("Synced")
    assert status.condition("Ready").reason == "Defined"  # type: ignore[union-attr]

    world.dom(name).create()
    world.reconcile(key)
    assert world.running(name)
    assert world.status(key).condition("Ready").reason == "Running"  # type: ignore[union-attr]

    world.dom(name).destroy()
    world.reconcile(key)
    assert not world.running(name)
    assert "Started" not in world.reasons(key) and "Stopped" not in world.reasons(key)


# -- spec changes ----------------------------------------------------------------------------


def test_changing_vcpus_redefines_and_a_running_guest_needs_a_restart(world: World) -> None:
    name = world.name("web")
    key = world.apply(name)
    world.reconcile(key)

    world.apply(name, vcpus=3)
    world.reconcile(key)
    assert world.config(name).vcpus == 3  # the persistent definition
    assert world.config(name, 0).vcpus == 1  # the running guest
    assert world.config(name).owner.generation == 2  # type: ignore[union-attr]
    assert "Redefined" in world.reasons(key)

    status = world.status(key)
    assert status.observed_generation == 2
    assert status.is_true("RestartRequired")
    assert "spec.vcpus" in status.condition("RestartRequired").message  # type: ignore[union-attr]
    # maxVcpus defaults to vcpus: the running guest was started with at most one.
    assert [(d.field, d.desired, d.actual) for d in status.drift] == [
        ("spec.vcpus", 3, 1),
        ("spec.maxVcpus", 3, 1),
    ]
    assert not status.is_true("Synced")
    assert status.is_true("Ready")

    # Restarted by hand: the guest runs the new definition and the condition clears.
    world.dom(name).destroy()
    world.dom(name).create()
    world.reconcile(key)
    status = world.status(key)
    assert status.condition("RestartRequired").status == "False"  # type: ignore[union-attr]
    assert status.drift == ()
    assert status.is_true("Synced")


def test_changing_vcpus_of_a_halted_guest_needs_no_restart(world: World) -> None:
    name = world.name("web")
    key = world.apply(name, runStrategy="Halted")
    world.reconcile(key)
    world.apply(name, runStrategy="Halted", vcpus=4)
    world.reconcile(key)
    assert world.config(name).vcpus == 4
    status = world.status(key)
    assert status.condition("RestartRequired") is None
    assert status.drift == ()
    assert status.is_true("Synced")


def test_a_definition_edited_by_hand_is_put_back(world: World) -> None:
    name = world.name("web")
    key = world.apply(name, runStrategy="Halted", memory="128Mi")
    world.reconcile(key)
    obj = world.store.get(key)
    assert obj is not None
    edited = DomainSpec.from_spec({**obj.spec, "memory": "256Mi"}, name)
    owner = Owner("Domain", name, obj.uid, 1, obj.digest)
    world.conn.defineXML(domain_xml.build(name, edited, owner))
    assert world.config(name).memory == 256 * 1024**2

    world.reconcile(key)
    assert world.config(name).memory == 128 * 1024**2
    assert "Redefined" in world.reasons(key)


# -- ownership -------------------------------------------------------------------------------


def _define_unowned(world: World, name: str) -> str:
    xml = domain_xml.build(name, DomainSpec.from_spec(BASE_SPEC | {"vcpus": 2}, name), None)
    world.conn.defineXML(xml)
    return str(world.dom(name).XMLDesc(INACTIVE))


def test_an_unowned_domain_of_the_same_name_is_a_conflict_and_left_alone(world: World) -> None:
    name = world.name("web")
    before = _define_unowned(world, name)
    key = world.apply(name, autostart=True)

    with pytest.raises(PermanentError, match="not managed by kvmrec"):
        world.reconcile(key)

    assert world.dom(name).XMLDesc(INACTIVE) == before
    assert not world.running(name)
    assert world.dom(name).autostart() == 0
    status = world.status(key)
    for type_ in ("Ready", "Synced"):
        cond = status.condition(type_)
        assert cond is not None
        assert (cond.status, cond.reason) == ("False", "Conflict")
        assert ADOPT_ANNOTATION in cond.message
    assert status.last_error is not None
    assert "Conflict" in world.reasons(key)


def test_the_adopt_annotation_takes_ownership(world: World) -> None:
    name = world.name("web")
    _define_unowned(world, name)
    key = world.apply(name)
    with pytest.raises(PermanentError):
        world.reconcile(key)

    world.apply(name, annotations={ADOPT_ANNOTATION: "true"})
    world.reconcile(key)
    obj = world.store.get(key)
    assert obj is not None
    config = world.config(name)
    owner = Owner("Domain", name, obj.uid, obj.generation, obj.digest, adopted=True)
    assert config.owner == owner
    assert config.vcpus == 1  # and it now follows the manifest
    assert world.running(name)
    assert {"Adopted", "Redefined"} <= set(world.reasons(key))
    assert world.status(key).is_true("Synced")


def test_adopting_a_matching_domain_records_adopted(world: World) -> None:
    name = world.name("web")
    world.conn.defineXML(domain_xml.build(name, DomainSpec.from_spec(BASE_SPEC, name), None))
    key = world.apply(name, annotations={ADOPT_ANNOTATION: "true"}, runStrategy="Manual")
    obj = world.store.get(key)
    assert obj is not None
    steps = world.reconciler.plan(obj).visible
    assert [s.action for s in steps] == ["adopt"], "the plan shows the adoption"
    assert "deletionPolicy: Delete" in steps[0].detail

    world.reconcile(key)
    owner = world.config(name).owner
    assert owner is not None and owner.adopted
    assert "Adopted" in world.reasons(key)
    assert world.reconciler.plan(obj).visible == [], "adopted: nothing left to do"

    # A later change keeps the adoption in the stamp.
    world.apply(name, annotations={ADOPT_ANNOTATION: "true"}, runStrategy="Manual", vcpus=2)
    world.reconcile(key)
    owner = world.config(name).owner
    assert owner is not None and owner.adopted and owner.generation == 2


def test_deleting_an_adopted_domain_says_kvmrec_did_not_create_it(world: World) -> None:
    name = world.name("web")
    _define_unowned(world, name)
    key = world.apply(name, annotations={ADOPT_ANNOTATION: "true"}, vcpus=2)
    world.reconcile(key)
    world.store.mark_deleting(key, world.clock.wall())
    obj = world.store.get(key)
    assert obj is not None
    [step] = world.reconciler.plan(obj).visible
    assert step.action == "delete"
    assert "adopted and did not create" in step.detail

    world.reconcile(key)
    assert not world.exists(name)
    [event] = [e for e in world.store.events(key) if e.reason == "Deleted"]
    assert "adopted and did not create" in event.message


def test_an_adoption_that_never_happened_deletes_nothing(world: World) -> None:
    name = world.name("web")
    before = _define_unowned(world, name)
    key = world.apply(name, annotations={ADOPT_ANNOTATION: "true"})
    world.store.mark_deleting(key, world.clock.wall())
    world.reconcile(key)
    assert world.dom(name).XMLDesc(INACTIVE) == before
    assert world.reasons(key)[-1] == "NotOwned"


# -- deletion --------------------------------------------------------------------------------


def test_deletion_policy_delete_undefines(world: World) -> None:
    name = world.name("web")
    key = world.apply(name)
    world.reconcile(key)
    world.store.mark_deleting(key, world.clock.wall())

    world.reconcile(key)
    assert not world.exists(name)
    assert world.store.get(key) is None
    assert world.store.get_status(key) is None
    assert world.reasons(key)[-1] == "Deleted"
    world.reconcile(key)  # the object is gone: nothing to do, no error


def test_deletion_policy_orphan_removes_the_stamp_and_keeps_the_domain(world: World) -> None:
    name = world.name("web")
    key = world.apply(name, deletionPolicy="Orphan")
    world.reconcile(key)
    world.store.mark_deleting(key, world.clock.wall())

    world.reconcile(key)
    assert world.exists(name)
    assert world.running(name)
    assert world.config(name).owner is None
    assert world.store.get(key) is None
    assert world.reasons(key)[-1] == "Orphaned"

    # A new manifest of that name now finds a domain it does not own.
    world.apply(name)
    with pytest.raises(PermanentError):
        world.reconcile(key)


def test_deleting_never_touches_an_unowned_domain(world: World) -> None:
    name = world.name("web")
    before = _define_unowned(world, name)
    key = world.apply(name)
    world.store.mark_deleting(key, world.clock.wall())
    world.reconcile(key)
    assert world.dom(name).XMLDesc(INACTIVE) == before
    assert world.store.get(key) is None
    assert world.reasons(key)[-1] == "NotOwned"


def test_deleting_a_domain_that_is_already_gone(world: World) -> None:
    name = world.name("web")
    key = world.apply(name)
    world.reconcile(key)
    world.dom(name).destroy()
    world.dom(name).undefine()
    world.store.mark_deleting(key, world.clock.wall())
    world.reconcile(key)
    assert world.store.get(key) is None
    assert world.reasons(key)[-1] == "Deleted"


# -- fast resync -----------------------------------------------------------------------------


def test_stale_after_converged_and_after_a_change_by_hand(world: World) -> None:
    a, b = world.name("a"), world.name("b")
    key_a, key_b = world.apply(a), world.apply(b)
    world.reconcile(key_a)
    world.reconcile(key_b)
    # The first reconciles acted, so they are not known converged yet.
    assert world.reconciler.stale([key_a, key_b]) == [key_a, key_b]

    world.reconcile(key_a)
    world.reconcile(key_b)
    assert world.reconciler.stale([key_a, key_b]) == []

    world.dom(b).setAutostart(1)
    assert world.reconciler.stale([key_a, key_b]) == [key_b]
    world.reconcile(key_b)  # puts it back (an action: stale until the next no-op)
    world.reconcile(key_b)
    assert world.reconciler.stale([key_a, key_b]) == []

    world.dom(a).destroy()
    assert world.reconciler.stale([key_a, key_b]) == [key_a]


def test_stale_includes_unknown_keys(world: World) -> None:
    key = ObjectKey("Domain", world.name("never"))
    assert world.reconciler.stale([key]) == [key]


# -- disks -----------------------------------------------------------------------------------


def _disk(path: str, bus: str, read_only: bool = False) -> dict[str, Any]:
    return {"path": path, "format": "qcow2", "bus": bus, "readOnly": read_only}


@pytest.mark.parametrize(
    ("layout", "targets"),
    [
        pytest.param(
            [
                ("a", "sata", False),
                ("b", "virtio", False),
                ("c", "scsi", True),
                ("d", "sata", False),
            ],
            ["sda", "sdb", "sdc", "vda"],
            id="sata-and-scsi-share-sdX",
        ),
        pytest.param(
            [("a", "virtio", False), ("b", "sata", False), ("c", "virtio", False)],
            ["sda", "vda", "vdb"],
            id="interleaved-buses",
        ),
    ],
)
def test_disks_get_distinct_targets_and_converge(
    world: World, layout: list[tuple[str, str, bool]], targets: list[str]
) -> None:
    name = world.name("disks")
    disks = [_disk(world.image(file), bus, ro) for file, bus, ro in layout]
    key = world.apply(name, disks=disks, runStrategy="Halted")
    world.reconcile(key)
    xml = world.dom(name).XMLDesc(INACTIVE)
    assert sorted(t.get("dev") for t in _findall(xml, "devices/disk/target")) == targets

    # libvirt keeps a definition's disks grouped by bus; that is not drift.
    world.reconcile(key)
    status = world.status(key)
    assert status.drift == ()
    assert status.is_true("Synced")
    assert world.dom(name).XMLDesc(INACTIVE) == xml
    assert world.reconciler.stale([key]) == []


def test_reordering_disks_within_a_bus_is_drift(world: World) -> None:
    name = world.name("disks")
    a, b = world.image("a"), world.image("b")
    first = [_disk(a, "virtio"), _disk(b, "virtio")]
    key = world.apply(name, disks=first, runStrategy="Halted")
    world.reconcile(key)
    world.apply(name, disks=first[::-1], runStrategy="Halted")
    world.reconcile(key)
    paths = [d.path for d in world.config(name).disks]
    assert paths == [b, a]
    assert "Redefined" in world.reasons(key)


def _findall(xml: str, path: str) -> list[Any]:
    return ET.fromstring(xml).findall(path)


# -- domain XML round trips ------------------------------------------------------------------

disk_strategy = st.builds(
    Disk,
    path=st.from_regex(r"/[a-z0-9]{1,8}(/[a-z0-9._-]{1,8}){0,2}", fullmatch=True),
    format=st.sampled_from(["qcow2", "raw"]),
    bus=st.sampled_from(["virtio", "sata", "scsi"]),
    read_only=st.booleans(),
)
spec_strategy = st.builds(
    DomainSpec,
    memory=st.integers(min_value=1024**2, max_value=64 * 1024**3),
    type=st.sampled_from(["kvm", "qemu"]),
    vcpus=st.integers(min_value=1, max_value=512),
    console=st.sampled_from(["serial", "none"]),
    disks=st.lists(disk_strategy, max_size=5, unique_by=lambda d: d.path).map(tuple),
    kernel=st.none() | st.from_regex(r"/[a-z0-9/._-]{1,40}", fullmatch=True),
    initrd=st.none() | st.from_regex(r"/[a-z0-9/._-]{1,40}", fullmatch=True),
    cmdline=st.none() | st.from_regex(r"[a-z0-9=._-]+( [a-z0-9=._-]+){0,4}", fullmatch=True),
    cpu=st.none()
    | st.builds(Cpu, mode=st.sampled_from(["host-passthrough", "host-model"]))
    | st.builds(
        Cpu,
        mode=st.just("custom"),
        model=st.sampled_from(["kvm64", "Skylake-Server", "EPYC"]),
        features=st.lists(
            st.builds(
                CpuFeature,
                name=st.sampled_from(["vmx", "svm", "pcid", "avx2"]),
                policy=st.sampled_from(["require", "disable", "optional", "forbid"]),
            ),
            max_size=3,
            unique_by=lambda f: f.name,
        ).map(lambda fs: tuple(sorted(fs, key=lambda f: f.name))),
    ),
)
owner_strategy = st.none() | st.builds(
    Owner,
    kind=st.just("Domain"),
    name=st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True),
    uid=st.uuids().map(str),
    generation=st.integers(min_value=1, max_value=10**6),
    digest=st.text("0123456789abcdef", min_size=64, max_size=64),
)


def _assert_round_trip(
    name: str, spec: DomainSpec, owner: Owner | None, config: DomainConfig
) -> None:
    assert config.name == name
    assert config.uuid == domain_xml.stable_uuid(name)
    assert config.type == spec.type
    assert config.vcpus == spec.vcpus
    assert config.memory == quantities.to_kib(spec.memory) * 1024
    assert config.console == spec.console
    assert config.owner == owner
    assert diff_config(spec, config) == []


@given(spec=spec_strategy, owner=owner_strategy)
def test_parse_of_build_round_trips(spec: DomainSpec, owner: Owner | None) -> None:
    config = domain_xml.parse(domain_xml.build("rt", spec, owner))
    _assert_round_trip("rt", spec, owner, config)
    assert config.disks == spec.disks  # without libvirt even the order across buses stays


@pytest.fixture(scope="module")
def module_conn() -> Iterator[tuple[Any, str]]:
    c = libvirt.open(URI)
    prefix = new_prefix()
    try:
        yield c, prefix
    finally:
        remove_domains(c, prefix)
        c.close()


_counter = itertools.count()


@settings(max_examples=40, deadline=None)
@given(spec=spec_strategy, owner=owner_strategy)
def test_round_trip_through_the_test_driver(
    module_conn: tuple[Any, str], spec: DomainSpec, owner: Owner | None
) -> None:
    conn, prefix = module_conn
    name = f"{prefix}rt{next(_counter)}"
    dom = conn.defineXML(domain_xml.build(name, spec, owner))
    try:
        _assert_round_trip(name, spec, owner, domain_xml.parse(dom.XMLDesc(INACTIVE)))
    finally:
        dom.undefine()
