"""The full Domain spec: round trips, disk images, run strategies, plans and restarts.

Against libvirt's in-process ``test:///default`` driver (its state is shared by every
connection in the process, so every domain and volume made here is named ``ut-<random>-...``
and removed by the fixtures) and real ``qemu-img`` images under ``tmp_path``. Every manifest
goes through ``parse_file``, so each spec used here is one an operator could write.

What the test driver does, found out by probing it and relied on below:

- ``destroy()`` leaves a guest shut off with reason ``VIR_DOMAIN_SHUTOFF_DESTROYED``,
  ``shutdown()`` (the guest "shutting itself down") with ``VIR_DOMAIN_SHUTOFF_SHUTDOWN``; every
  ``create()`` gives the guest a new ID (asserted in the first test).
- ``setVcpusFlags`` / ``setMemoryFlags`` with ``AFFECT_LIVE`` work and show in the live XML.
  ``attachDeviceFlags``, ``detachDeviceFlags``, ``blockResize`` and ``virStorageVolResize``
  are not supported: interface hot-plug and growing a running guest's disk or a pool volume
  are left to the integration tests.
- ``blockInfo()`` of a running guest's disk reports a made-up 1 TiB, not the image's size, so
  image growth is tested on stopped guests, where kvmrec reads the file with qemu-img.
- It accepted every definition the round-trip strategy generates (probed with 1500 examples):
  firmware efi included (it needs no OVMF), as are more than four IDE disks (real QEMU
  stops at four). It adds ``<boot dev='hd'/>`` to a definition without a boot device.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest
import testdriver
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from testdriver import INACTIVE, URI, new_prefix, remove_domains

from kvmrec.api.domain_parts import derived_mac
from kvmrec.api.kinds import ADOPT_ANNOTATION, DomainSpec, ObjectKey
from kvmrec.api.manifests import parse_file
from kvmrec.backends import domain_xml, images
from kvmrec.backends.domain_xml import DomainConfig, Owner
from kvmrec.engine.workers import PermanentError, Result
from kvmrec.reconcilers.domain import DomainReconciler, diff_config
from kvmrec.reconcilers.plans import Plan, plan_fields
from kvmrec.store.records import Condition, Drift, StoredObject

POOL = "default-pool"  # the test driver's one storage pool
MiB = 1024**2


def _document(name: str, spec: dict[str, Any], annotations: dict[str, str] | None = None) -> bytes:
    metadata: dict[str, Any] = {"name": name}
    if annotations:
        metadata["annotations"] = annotations
    document = {"apiVersion": "kvmrec.io/v1alpha1", "kind": "Domain", "metadata": metadata}
    return yaml.safe_dump({**document, "spec": spec}).encode()


# -- qemu-img, asked directly (not through kvmrec's images module) -----------------------------


def qemu_img(*args: str) -> str:
    done = subprocess.run(
        ["qemu-img", *args], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


def img_info(path: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(qemu_img("info", "-U", "--output=json", path))
    return info


def same_content(a: str, b: str) -> bool:
    done = subprocess.run(["qemu-img", "compare", "-U", a, b], capture_output=True, timeout=60)
    assert done.returncode in (0, 1), done.stderr  # 0: identical, 1: different, else error
    return done.returncode == 0


def sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- the world: a store, the reconciler, the test driver, an image directory -------------------


@dataclass
class World(testdriver.World):
    reconciler: DomainReconciler
    images: Path

    def path(self, file: str) -> str:
        return str(self.images / file)

    def image(self, file: str, size: str = "16M", fmt: str = "qcow2") -> str:
        path = self.path(file)
        qemu_img("create", "-q", "-f", fmt, path, size)
        return path

    def raw(self, file: str, fill: bytes) -> str:
        """A 1 MiB raw image full of ``fill``: content that copies can be compared with."""
        path = self.path(file)
        Path(path).write_bytes(fill * (MiB // len(fill)))
        return path

    def apply(self, name: str, annotations: dict[str, str] | None = None, **spec: Any) -> ObjectKey:
        [manifest] = parse_file(
            f"{name}.yaml", _document(name, {"memory": "64Mi", **spec}, annotations)
        )
        self.store.apply(manifest, self.clock.wall())
        return manifest.key

    def obj(self, key: ObjectKey) -> StoredObject:
        obj = self.store.get(key)
        assert obj is not None
        return obj

    def owner(self, key: ObjectKey) -> Owner:
        obj = self.obj(key)
        return Owner("Domain", key.name, obj.uid, obj.generation, obj.digest)

    def reconcile(self, key: ObjectKey, advance: float = 1.0) -> Result:
        if advance:
            self.clock.advance(advance)
        return self.reconciler.reconcile(key)

    def plan(self, key: ObjectKey) -> Plan:
        return self.reconciler.plan(self.obj(key), self.store.get_status(key))

    def condition(self, key: ObjectKey, type_: str) -> Condition:
        cond = self.status(key).condition(type_)
        assert cond is not None, f"no {type_} condition"
        return cond

    def messages(self, key: ObjectKey, reason: str) -> list[str]:
        return [e.message for e in self.store.events(key) if e.reason == reason]


@pytest.fixture
def world(tmp_path: Path, conn: Any) -> Iterator[World]:
    (tmp_path / "images").mkdir()
    with testdriver.opened(tmp_path, conn) as w:
        yield World(
            w.prefix,
            conn,
            w.store,
            w.hv,
            w.clock,
            DomainReconciler(w.store, w.hv, w.clock, stop_grace=0),
            tmp_path / "images",
        )


# -- the test driver itself --------------------------------------------------------------------


def test_the_test_driver_tells_a_destroyed_guest_from_one_that_shut_down(world: World) -> None:
    name = world.name("facts")
    world.conn.defineXML(
        domain_xml.build(name, DomainSpec.from_spec({"memory": "64Mi"}, name), None)
    )
    dom = world.dom(name)
    dom.create()
    first = dom.ID()
    dom.destroy()
    assert dom.state() == [libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED]
    live = world.hv.get_domain(name)
    assert live is not None and (live.state, live.reason) == ("shutoff", "destroyed")

    dom.create()
    assert dom.ID() != first
    dom.shutdown()
    assert dom.state() == [libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN]
    live = world.hv.get_domain(name)
    assert live is not None and (live.state, live.reason) == ("shutoff", "shutdown")


# -- domain XML round trips --------------------------------------------------------------------

SEGMENT = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,7}", fullmatch=True)
IFACE_NAMES = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?", fullmatch=True)
BRIDGES = st.from_regex(r"[a-z][a-z0-9-]{0,14}", fullmatch=True)
NETWORKS = st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True)


@st.composite
def disk_specs(draw: st.DrawFn, index: int) -> dict[str, Any]:
    segment = draw(SEGMENT)
    if draw(st.integers(0, 3)) == 0:
        # A cdrom: the manifest rules allow sata, ide and scsi (and the default, sata).
        disk: dict[str, Any] = {"path": f"/iso/{segment}/{index}.iso", "device": "cdrom"}
        bus = draw(st.sampled_from([None, "sata", "ide", "scsi"]))
    else:
        if draw(st.booleans()):
            disk = {"path": f"/var/lib/{segment}/{index}.img"}
        else:
            disk = {
                "pool": draw(st.sampled_from(["default", "fast"])),
                "volume": f"{segment}-{index}",
            }
        bus = draw(st.sampled_from([None, "virtio", "sata", "scsi", "ide"]))
        disk["format"] = draw(st.sampled_from(["qcow2", "raw"]))
        # The manifest rules refuse read-only disks on sata and ide (QEMU does).
        disk["readOnly"] = bus in (None, "virtio", "scsi") and draw(st.booleans())
        # How an image is made is no part of a definition: these must never show as drift.
        intent = draw(st.sampled_from(["none", "size", "backing", "clone-path", "clone-domain"]))
        if intent == "size":
            disk["size"] = f"{draw(st.integers(1, 4096))}Mi"
        elif intent == "backing" and disk["format"] == "qcow2":
            disk["backingImage"] = f"/golden/{segment}.qcow2"
        elif intent == "clone-path":
            disk["cloneFrom"] = {"path": f"/golden/{segment}.qcow2"}
        elif intent == "clone-domain":
            disk["cloneFrom"] = {"domain": "golden", "disk": draw(st.integers(0, 3))}
        disk["deletionPolicy"] = draw(st.sampled_from(["Keep", "Delete"]))
    if bus is not None:
        disk["bus"] = bus
    return disk


@st.composite
def interface_specs(draw: st.DrawFn) -> list[dict[str, Any]]:
    interfaces = []
    for index, name in enumerate(draw(st.lists(IFACE_NAMES, max_size=4, unique=True))):
        iface: dict[str, Any] = {"name": name}
        if draw(st.booleans()):
            iface["network"] = draw(NETWORKS)
        else:
            iface["bridge"] = draw(BRIDGES)
            if draw(st.booleans()):
                iface["virtualport"] = "openvswitch"
        model = draw(st.sampled_from([None, "virtio", "e1000", "e1000e", "rtl8139"]))
        if model is not None:
            iface["model"] = model
        if draw(st.booleans()):
            # Outside the derived 52:54:00 range, and distinct by index.
            iface["mac"] = f"02:00:00:00:{index:02x}:{draw(st.integers(0, 255)):02x}"
        interfaces.append(iface)
    return interfaces


@st.composite
def domain_specs(draw: st.DrawFn) -> dict[str, Any]:
    memory = draw(st.integers(MiB, 64 * 1024**3))  # bytes: not always whole KiB
    vcpus = draw(st.integers(1, 512))
    spec: dict[str, Any] = {
        "type": draw(st.sampled_from(["kvm", "qemu"])),
        "vcpus": vcpus,
        "memory": memory,
        "runStrategy": draw(st.sampled_from(["Always", "RerunOnFailure", "Once", "Halted"])),
        "autostart": draw(st.booleans()),
        "console": draw(st.sampled_from(["serial", "none"])),
        "guestAgent": draw(st.booleans()),
        # efi too: the test driver takes it without OVMF (a real host needs the firmware).
        "os": {
            "firmware": draw(st.sampled_from(["bios", "efi"])),
            "boot": draw(st.lists(st.sampled_from(["hd", "cdrom", "network"]), max_size=4)),
        },
        "disks": [draw(disk_specs(i)) for i in range(draw(st.integers(0, 8)))],
        "interfaces": draw(interface_specs()),
    }
    if draw(st.booleans()):
        spec["maxVcpus"] = draw(st.integers(vcpus, 512))
    if draw(st.booleans()):
        spec["maxMemory"] = memory + draw(st.integers(0, 4 * 1024**3))
    graphics = draw(st.sampled_from(["default", "none", "vnc", "vnc-listen"]))
    if graphics == "none":
        spec["graphics"] = {"type": "none"}
    elif graphics == "vnc":
        spec["graphics"] = {"type": "vnc"}
    elif graphics == "vnc-listen":
        spec["graphics"] = {"type": "vnc", "listen": str(draw(st.ip_addresses()))}
    return spec


owners = st.none() | st.builds(
    Owner,
    kind=st.just("Domain"),
    name=st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True),
    uid=st.uuids().map(str),
    generation=st.integers(min_value=1, max_value=10**6),
    digest=st.text("0123456789abcdef", min_size=64, max_size=64),
)


def accepted(name: str, spec: dict[str, Any]) -> DomainSpec:
    """The model of ``spec`` as kvmrec would accept it from a file (it must be valid)."""
    [manifest] = parse_file("generated.yaml", _document(name, spec))
    model = DomainSpec.from_spec(manifest.spec, name)
    # Derived MACs are 24 bits of a hash: two names of one domain could (very rarely) meet.
    assume(len({i.mac for i in model.interfaces}) == len(model.interfaces))
    return model


def assert_round_trip(
    name: str, spec: DomainSpec, owner: Owner | None, config: DomainConfig
) -> None:
    assert diff_config(spec, config) == []
    assert (config.name, config.uuid, config.owner) == (name, domain_xml.stable_uuid(name), owner)
    assert [i.mac for i in config.interfaces] == [i.mac for i in spec.interfaces]
    assert config.balloon == (spec.memory_max > spec.memory)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    name=st.from_regex(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?", fullmatch=True),
    raw=domain_specs(),
    owner=owners,
)
def test_parse_of_build_is_the_spec(name: str, raw: dict[str, Any], owner: Owner | None) -> None:
    spec = accepted(name, raw)
    config = domain_xml.parse(domain_xml.build(name, spec, owner))
    assert_round_trip(name, spec, owner, config)
    # Without libvirt in between even the order across buses is kept.
    assert config.disks == tuple(d.attachment() for d in spec.disks)
    for iface, written in zip(spec.interfaces, raw["interfaces"], strict=True):
        assert iface.mac == written.get("mac", derived_mac(name, written["name"]))


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


@settings(max_examples=60, deadline=None, derandomize=True)
@given(raw=domain_specs(), owner=owners)
def test_the_test_driver_keeps_every_compared_field(
    module_conn: tuple[Any, str], raw: dict[str, Any], owner: Owner | None
) -> None:
    conn, prefix = module_conn
    name = f"{prefix}rt{next(_counter)}"
    spec = accepted(name, raw)
    dom = conn.defineXML(domain_xml.build(name, spec, owner))
    try:
        assert_round_trip(name, spec, owner, domain_xml.parse(dom.XMLDesc(INACTIVE)))
    finally:
        dom.undefine()


# -- disk images -------------------------------------------------------------------------------
# Halted guests throughout: on the test driver a running guest's disk reports a fake size
# (see the module docstring), and what is asserted here is the image on disk.


@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
def test_a_disk_with_a_size_is_created_with_that_virtual_size(world: World, fmt: str) -> None:
    name = world.name("new")
    path = world.path(f"deep/er/{name}.img")  # directories are made as needed
    key = world.apply(
        name, runStrategy="Halted", disks=[{"path": path, "size": "32Mi", "format": fmt}]
    )
    world.reconcile(key)

    info = img_info(path)
    assert (info["format"], info["virtual-size"]) == (fmt, 32 * MiB)
    assert "backing-filename" not in info
    assert [d.path for d in world.config(name).disks] == [path]
    [message] = world.messages(key, "ImageCreated")
    assert path in message
    assert world.condition(key, "Synced").status == "True"
    assert world.condition(key, "Ready").reason == "Halted"


def test_a_larger_size_grows_the_image_and_a_smaller_one_never_shrinks_it(world: World) -> None:
    name = world.name("grow")
    first, second = world.path("first.qcow2"), world.path("second.qcow2")

    def disks(size: str) -> list[dict[str, Any]]:
        return [{"path": first, "size": "16Mi"}, {"path": second, "size": size}]

    key = world.apply(name, runStrategy="Halted", disks=disks("32Mi"))
    world.reconcile(key)
    assert img_info(second)["virtual-size"] == 32 * MiB

    world.apply(name, runStrategy="Halted", disks=disks("48Mi"))
    [grow] = world.plan(key).visible  # the definition is the same: only the image changes
    assert (grow.action, grow.fields) == (
        "grow-image",
        (Drift("spec.disks[1].size", "48Mi", "32Mi"),),
    )
    world.reconcile(key)
    assert img_info(second)["virtual-size"] == 48 * MiB
    assert img_info(first)["virtual-size"] == 16 * MiB
    assert "Redefined" not in world.reasons(key)
    assert world.reasons(key).count("ImageGrown") == 1

    world.apply(name, runStrategy="Halted", disks=disks("16Mi"))
    assert world.plan(key).visible == []
    world.reconcile(key)
    assert img_info(second)["virtual-size"] == 48 * MiB
    assert world.reasons(key).count("ImageGrown") == 1
    assert world.condition(key, "Synced").status == "True"
    assert world.status(key).drift == ()


def test_a_backing_image_makes_an_overlay_and_the_base_is_never_written(world: World) -> None:
    name = world.name("linked")
    base = world.image("base.qcow2", "16M")
    before = sha256(base)
    big, same = world.path("big.qcow2"), world.path("same.qcow2")
    key = world.apply(
        name,
        runStrategy="Halted",
        disks=[
            {"path": big, "backingImage": base, "size": "32Mi"},
            {"path": same, "backingImage": base},
        ],
    )
    world.reconcile(key)

    for overlay, size in ((big, 32 * MiB), (same, 16 * MiB)):
        info = img_info(overlay)
        assert (info["format"], info["virtual-size"]) == ("qcow2", size)
        assert info["backing-filename"] == base
        assert info["backing-filename-format"] == "qcow2"
    assert sha256(base) == before
    assert img_info(base)["virtual-size"] == 16 * MiB
    assert world.condition(key, "Synced").status == "True"


def test_clone_from_a_path_is_a_full_independent_copy(world: World) -> None:
    name = world.name("clone")
    bottom = world.raw("bottom.raw", b"kvmrec!\n")
    golden = world.path("golden.qcow2")  # itself an overlay: the copy must flatten the chain
    qemu_img("create", "-q", "-f", "qcow2", "-F", "raw", "-b", bottom, golden)
    assert img_info(golden)["backing-filename"] == bottom
    before = sha256(golden)
    plain, grown = world.path("plain.qcow2"), world.path("grown.qcow2")
    key = world.apply(
        name,
        runStrategy="Halted",
        disks=[
            {"path": plain, "cloneFrom": {"path": golden}},
            {"path": grown, "cloneFrom": {"path": golden}, "size": "32Mi"},
        ],
    )
    world.reconcile(key)

    for copy, size in ((plain, MiB), (grown, 32 * MiB)):
        info = img_info(copy)
        assert "backing-filename" not in info
        assert (info["format"], info["virtual-size"]) == ("qcow2", size)
    assert same_content(golden, plain)
    assert sha256(golden) == before
    assert not list(world.images.glob("*.kvmrec-partial"))

    # Independent: with its whole source chain gone the copy still holds the same data.
    Path(golden).unlink()
    Path(bottom).unlink()
    assert same_content(world.raw("again.raw", b"kvmrec!\n"), plain)


def test_clone_from_a_domain_copies_the_disk_it_names(world: World) -> None:
    source = world.name("golden")
    a, b = world.raw("a.raw", b"A"), world.raw("b.raw", b"B")
    world.reconcile(
        world.apply(
            source,
            runStrategy="Halted",
            disks=[{"path": a, "format": "raw"}, {"path": b, "format": "raw"}],
        )
    )
    name = world.name("copy")
    first, second = world.path("first.qcow2"), world.path("second.qcow2")
    key = world.apply(
        name,
        runStrategy="Halted",
        disks=[
            {"path": first, "cloneFrom": {"domain": source}},
            {"path": second, "cloneFrom": {"domain": source, "disk": 1}},
        ],
    )
    world.reconcile(key)

    assert same_content(a, first) and not same_content(b, first)
    assert same_content(b, second) and not same_content(a, second)
    assert "backing-filename" not in img_info(second)
    assert any(a in m for m in world.messages(key, "ImageCreated"))
    assert any(b in m for m in world.messages(key, "ImageCreated"))


MissingCase = Callable[[World], list[dict[str, Any]]]
MISSING: list[Any] = [
    pytest.param(
        lambda w: [{"path": w.path("nowhere.iso"), "device": "cdrom"}],
        "spec.disks[0].path",
        id="cdrom-iso-missing",
    ),
    pytest.param(
        lambda w: [{"path": w.path("nothing.qcow2")}],
        "spec.disks[0]: ",
        id="no-size-backing-or-clone",
    ),
    pytest.param(
        lambda w: [{"path": w.path("o.qcow2"), "backingImage": w.path("no-base.qcow2")}],
        "spec.disks[0].backingImage",
        id="backing-image-missing",
    ),
    pytest.param(
        lambda w: [{"path": w.path("c.qcow2"), "cloneFrom": {"path": w.path("no-golden.qcow2")}}],
        "spec.disks[0].cloneFrom",
        id="clone-path-missing",
    ),
    pytest.param(
        lambda w: [{"path": w.path("c.qcow2"), "cloneFrom": {"domain": w.name("nobody")}}],
        "spec.disks[0].cloneFrom",
        id="clone-domain-missing",
    ),
    pytest.param(
        # The first disk could be made, but nothing is acted on while one cannot.
        lambda w: [
            {"path": w.path("fine.qcow2"), "size": "16Mi"},
            {"path": w.path("nothing.qcow2"), "bus": "sata"},
        ],
        "spec.disks[1]: ",
        id="second-disk-missing",
    ),
]


@pytest.mark.parametrize(("disks", "field"), MISSING)
def test_a_disk_that_cannot_be_had_is_image_missing(
    world: World, disks: MissingCase, field: str
) -> None:
    name = world.name("missing")
    key = world.apply(name, disks=disks(world))
    plan = world.plan(key)
    assert plan.blocked_reason == "ImageMissing"
    assert plan.blocked is not None and field in plan.blocked

    with pytest.raises(PermanentError, match=re.escape(field)):
        world.reconcile(key)
    for type_ in ("Ready", "Synced"):
        cond = world.condition(key, type_)
        assert (cond.status, cond.reason) == ("False", "ImageMissing")
        assert field in cond.message
    assert not world.exists(name)
    assert list(world.images.iterdir()) == []  # no image made, none half made
    assert "ImageMissing" in world.reasons(key)


def test_image_missing_clears_once_the_iso_is_there(world: World) -> None:
    name = world.name("iso")
    iso = world.path("install.iso")
    key = world.apply(name, disks=[{"path": iso, "device": "cdrom"}], os={"boot": ["cdrom"]})
    with pytest.raises(PermanentError):
        world.reconcile(key)
    Path(iso).write_bytes(b"\0" * 2048)
    world.reconcile(key)
    assert world.running(name)
    [disk] = world.config(name).disks
    assert (disk.path, disk.device, disk.bus, disk.read_only) == (iso, "cdrom", "sata", True)
    assert world.condition(key, "Ready").reason == "Running"
    assert Path(iso).read_bytes() == b"\0" * 2048  # an ISO is only ever read


def test_a_qemu_img_failure_is_retried_with_its_message(world: World) -> None:
    name = world.name("broken")
    not_an_image = world.images / "a-directory"
    not_an_image.mkdir()
    key = world.apply(
        name, disks=[{"path": world.path("o.qcow2"), "backingImage": str(not_an_image)}]
    )
    with pytest.raises(images.ImageError):
        world.reconcile(key)
    cond = world.condition(key, "Synced")
    assert (cond.status, cond.reason) == ("False", "ReconcileFailed")
    status = world.status(key)
    assert status.last_error is not None and "qemu-img" in status.last_error
    assert status.retries == 1
    assert not world.exists(name)


def test_a_pool_volume_is_created_in_the_pool_and_deleted_when_asked(world: World) -> None:
    name = world.name("vol")
    volume = world.name("data.qcow2")
    key = world.apply(
        name,
        runStrategy="Halted",
        disks=[{"pool": POOL, "volume": volume, "size": "32Mi", "deletionPolicy": "Delete"}],
    )
    world.reconcile(key)
    assert world.hv.volume_capacity(POOL, volume) == 32 * MiB
    [disk] = world.config(name).disks
    assert (disk.pool, disk.volume, disk.path) == (POOL, volume, None)
    assert world.condition(key, "Synced").status == "True"

    world.store.mark_deleting(key, world.clock.wall())
    world.reconcile(key)
    assert world.hv.volume_path(POOL, volume) is None
    assert not world.exists(name)


def test_deletion_removes_only_the_images_whose_policy_says_delete(world: World) -> None:
    name = world.name("gone")
    kept, doomed = world.path("kept.qcow2"), world.path("doomed.qcow2")
    iso = world.raw("install.iso", b"iso")
    key = world.apply(
        name,
        disks=[
            {"path": kept, "size": "16Mi"},
            {"path": doomed, "size": "16Mi", "deletionPolicy": "Delete"},
            # Install media are shared: never deleted, whatever the disk says.
            {"path": iso, "device": "cdrom", "deletionPolicy": "Delete"},
        ],
    )
    world.reconcile(key)
    assert world.running(name)

    world.store.mark_deleting(key, world.clock.wall())
    [step] = world.plan(key).steps
    assert step.action == "delete"
    assert doomed in step.detail and kept not in step.detail and iso not in step.detail
    world.reconcile(key)

    assert not world.exists(name)
    assert not Path(doomed).exists()
    assert Path(kept).exists() and Path(iso).exists()
    [message] = world.messages(key, "Deleted")
    assert doomed in message and kept not in message


def test_deletion_keeps_every_image_by_default_and_when_orphaning(world: World) -> None:
    plain, orphan = world.name("plain"), world.name("orphan")
    a, b = world.path("a.qcow2"), world.path("b.qcow2")
    key_plain = world.apply(plain, disks=[{"path": a, "size": "16Mi"}])
    key_orphan = world.apply(
        orphan,
        deletionPolicy="Orphan",
        disks=[{"path": b, "size": "16Mi", "deletionPolicy": "Delete"}],
    )
    for key in (key_plain, key_orphan):
        world.reconcile(key)
        world.store.mark_deleting(key, world.clock.wall())
        world.reconcile(key)

    assert Path(a).exists() and Path(b).exists()
    assert not world.exists(plain)
    assert world.exists(orphan) and world.config(orphan).owner is None
    [message] = world.messages(key_plain, "Deleted")
    assert "disk images kept" in message


# -- run strategies ----------------------------------------------------------------------------


def test_rerun_on_failure_restarts_a_destroyed_guest_not_one_that_shut_down(world: World) -> None:
    name = world.name("rerun")
    key = world.apply(name, runStrategy="RerunOnFailure")
    world.reconcile(key)
    assert world.running(name)
    first = world.dom(name).ID()

    world.dom(name).destroy()  # killed from outside: a failure
    world.reconcile(key)
    assert world.running(name)
    assert world.dom(name).ID() != first
    assert "destroyed" in world.messages(key, "Started")[-1]
    assert world.condition(key, "Ready").reason == "Running"

    world.dom(name).shutdown()  # the guest shut itself down: it has finished
    world.reconcile(key)
    world.reconcile(key, advance=600)
    assert not world.running(name)
    assert world.dom(name).state()[1] == libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN
    ready = world.condition(key, "Ready")
    assert (ready.status, ready.reason) == ("True", "Completed")
    assert world.condition(key, "Synced").status == "True"
    assert world.reasons(key).count("Started") == 2


def test_once_starts_once_per_generation(world: World) -> None:
    name = world.name("once")
    key = world.apply(name, runStrategy="Once")
    world.reconcile(key)
    assert world.running(name)

    world.dom(name).destroy()
    world.reconcile(key)
    world.reconcile(key, advance=600)
    assert not world.running(name)
    assert world.reasons(key).count("Started") == 1
    ready = world.condition(key, "Ready")
    assert (ready.status, ready.reason) == ("True", "Defined")
    assert world.condition(key, "Synced").status == "True"

    world.apply(name, runStrategy="Once", vcpus=2)  # a new generation runs once more
    world.reconcile(key)
    assert world.running(name)
    assert world.config(name, 0).vcpus == 2
    world.dom(name).shutdown()
    world.reconcile(key)
    assert not world.running(name)
    assert world.reasons(key).count("Started") == 2


def test_crash_loop_backoff_grows_and_a_long_run_resets_it(world: World) -> None:
    name = world.name("crashy")
    key = world.apply(name)
    assert world.reconcile(key, advance=0) == Result()
    assert world.running(name)

    def fail() -> Result:
        world.dom(name).destroy()
        return world.reconcile(key, advance=0)  # the failure is noticed at once

    assert fail() == Result()  # the first quick failure is healed at once
    assert world.running(name)

    for failures, gap in ((2, 1.0), (3, 4.0), (4, 9.0)):
        assert fail() == Result(requeue_after=gap)
        assert not world.running(name)
        ready = world.condition(key, "Ready")
        assert (ready.status, ready.reason) == ("False", "CrashLoopBackOff")
        assert (
            f"stopped {failures} times in a row within 60 s of its start; "
            f"next start in {gap:.0f} s" in ready.message
        )
        assert "resets once the guest has run for 60 s" in ready.message
        # Not before its time, whatever wakes it.
        assert world.reconcile(key, advance=gap - 1) == Result(requeue_after=1.0)
        assert not world.running(name)
        assert world.reconcile(key, advance=1) == Result()
        assert world.running(name)
        assert world.condition(key, "Ready").reason == "Running"

    world.clock.advance(61)  # a guest that ran for over a minute did not fail quickly
    assert fail() == Result()
    assert world.running(name)
    assert fail() == Result()  # the count started over
    assert fail() == Result(requeue_after=1.0)


def test_crash_loop_waits_beyond_a_minute_once_the_stops_keep_coming(world: World) -> None:
    # The wait counts from the stop, and only how long the guest ran decides whether a stop
    # was quick: a wait longer than the quick-failure window does not reset the count.
    name = world.name("crashier")
    key = world.apply(name)
    world.reconcile(key, advance=0)
    waits = []
    for _ in range(11):
        world.clock.advance(2)  # each run lasts two seconds
        world.dom(name).destroy()
        result = world.reconcile(key, advance=0)
        waits.append(result.requeue_after)
        if result.requeue_after is not None:
            assert world.reconcile(key, advance=result.requeue_after) == Result()
        assert world.running(name)
    assert waits == [None, 1.0, 4.0, 9.0, 16.0, 25.0, 36.0, 49.0, 64.0, 81.0, 100.0]


# -- plan: the dry run ----------------------------------------------------------------------


def test_plan_of_a_new_domain_lists_every_step_and_does_none(world: World) -> None:
    name = world.name("fresh")
    disk = world.path("fresh.qcow2")
    key = world.apply(name, autostart=True, disks=[{"path": disk, "size": "32Mi"}])
    plan = world.plan(key)
    assert [s.action for s in plan.steps] == ["create-image", "create", "autostart", "start"]
    assert plan.visible == list(plan.steps)
    assert (plan.blocked, plan.wait) == (None, None)
    assert plan_fields(plan.visible) == [
        {"field": "spec.disks[0]", "desired": disk, "actual": None},
        {"field": "spec.autostart", "desired": True, "actual": False},
        {"field": "spec.runStrategy", "desired": "Always", "actual": "undefined"},
    ]
    assert not world.exists(name)
    assert not Path(disk).exists()
    assert world.store.get_status(key) is None
    assert world.store.events(key) == []

    halted = world.apply(world.name("halted"), runStrategy="Halted")
    assert [s.action for s in world.plan(halted).steps] == ["create"]


def test_plan_of_a_converged_domain_is_empty(world: World) -> None:
    name = world.name("calm")
    key = world.apply(
        name,
        runStrategy="Halted",
        autostart=True,
        disks=[{"path": world.path("calm.qcow2"), "size": "16Mi"}],
        interfaces=[{"name": "eth0", "network": "default"}],
    )
    world.reconcile(key)
    plan = world.plan(key)
    assert plan == Plan()
    assert plan.visible == []


def test_plan_shows_a_hand_edit_field_by_field(world: World) -> None:
    name = world.name("edited")
    key = world.apply(name)
    world.reconcile(key)
    obj = world.obj(key)
    edited = DomainSpec.from_spec({**obj.spec, "vcpus": 2}, name)
    world.conn.defineXML(domain_xml.build(name, edited, world.owner(key)))

    [update] = world.plan(key).visible
    assert update.action == "update"
    assert Drift("spec.vcpus", 1, 2) in update.fields
    assert world.config(name).vcpus == 2  # the plan changed nothing

    world.reconcile(key)
    assert world.config(name).vcpus == 1
    assert "spec.vcpus" in world.messages(key, "Redefined")[-1]
    assert world.plan(key).visible == []


def test_a_new_generation_with_the_same_definition_is_only_a_stamp(world: World) -> None:
    name = world.name("stamp")
    key = world.apply(name)
    world.reconcile(key)
    before = world.dom(name).XMLDesc(INACTIVE)

    world.apply(name, restartPolicy="Auto")  # not part of the definition
    assert world.obj(key).generation == 2
    plan = world.plan(key)
    assert [(s.action, s.visible) for s in plan.steps] == [("stamp", False)]
    assert plan.visible == []

    world.reconcile(key)
    after = world.dom(name).XMLDesc(INACTIVE)
    assert world.config(name).owner == world.owner(key)
    assert _without_metadata(after) == _without_metadata(before)
    assert "Redefined" not in world.reasons(key)
    assert world.status(key).observed_generation == 2
    assert world.plan(key) == Plan()


def _without_metadata(xml: str) -> str:
    # Where libvirt puts the xmlns declaration differs between defineXML and setMetadata.
    return re.sub(r"<metadata[^>]*>.*</metadata>", "", xml, flags=re.DOTALL)


def test_plan_of_a_conflict_is_blocked(world: World) -> None:
    name = world.name("theirs")
    world.conn.defineXML(
        domain_xml.build(name, DomainSpec.from_spec({"memory": "64Mi"}, name), None)
    )
    before = world.dom(name).XMLDesc(INACTIVE)
    key = world.apply(name)
    plan = world.plan(key)
    assert [s.action for s in plan.steps] == ["conflict"]
    assert plan.blocked_reason == "Conflict"
    assert plan.blocked is not None and ADOPT_ANNOTATION in plan.blocked
    assert world.dom(name).XMLDesc(INACTIVE) == before

    world.apply(name, annotations={ADOPT_ANNOTATION: "true"})
    assert world.plan(key).blocked is None


# -- changes to a running guest ----------------------------------------------------------------


def test_a_change_within_the_maximum_is_applied_to_the_running_guest(world: World) -> None:
    name = world.name("live")
    base = {"maxVcpus": 4, "maxMemory": "256Mi"}
    key = world.apply(name, **base)
    world.reconcile(key)
    started = world.dom(name).ID()

    world.apply(name, vcpus=3, memory="128Mi", **base)
    assert [s.action for s in world.plan(key).visible] == ["update", "update-live"]
    world.reconcile(key)
    assert world.dom(name).ID() == started
    running, defined = world.config(name, 0), world.config(name)
    assert (running.vcpus, running.memory) == (3, 128 * MiB)
    assert (defined.vcpus, defined.memory) == (3, 128 * MiB)
    assert world.status(key).condition("RestartRequired") is None
    assert world.condition(key, "Synced").status == "True"
    assert "UpdatedLive" in world.reasons(key)


def test_restart_policy_manual_waits_and_auto_restarts(world: World) -> None:
    name = world.name("restart")
    key = world.apply(name)
    world.reconcile(key)
    started = world.dom(name).ID()

    world.apply(name, vcpus=2, console="none")
    world.reconcile(key)
    assert world.dom(name).ID() == started  # Manual: left running as it was
    assert (world.config(name, 0).vcpus, world.config(name).vcpus) == (1, 2)
    cond = world.condition(key, "RestartRequired")
    assert cond.status == "True"
    for field in ("spec.vcpus", "spec.maxVcpus", "spec.console"):
        assert field in cond.message
    assert world.condition(key, "Synced").status == "False"

    world.apply(name, vcpus=2, console="none", restartPolicy="Auto")
    world.reconcile(key)
    assert world.running(name)
    assert world.dom(name).ID() != started
    running = world.config(name, 0)
    assert (running.vcpus, running.console) == (2, "none")
    cond = world.condition(key, "RestartRequired")
    assert (cond.status, cond.reason) == ("False", "UpToDate")
    assert world.condition(key, "Synced").status == "True"
    assert "spec.vcpus" in world.messages(key, "Restarted")[-1]


def test_restart_policy_auto_restarts_without_ever_requiring_it(world: World) -> None:
    name = world.name("auto")
    key = world.apply(name, restartPolicy="Auto")
    world.reconcile(key)
    started = world.dom(name).ID()

    world.apply(name, restartPolicy="Auto", vcpus=2)
    assert [s.action for s in world.plan(key).visible] == ["update", "restart"]
    world.reconcile(key)
    assert world.dom(name).ID() != started
    assert world.config(name, 0).vcpus == 2
    assert world.status(key).condition("RestartRequired") is None
    assert world.condition(key, "Ready").reason == "Running"
    assert world.reasons(key).count("Restarted") == 1


def test_a_halted_guest_takes_any_change_without_a_restart(world: World) -> None:
    name = world.name("cold")
    key = world.apply(name, runStrategy="Halted")
    world.reconcile(key)
    world.apply(name, runStrategy="Halted", vcpus=2, console="none", guestAgent=True)
    world.reconcile(key)
    config = world.config(name)
    assert (config.vcpus, config.console, config.guest_agent) == (2, "none", True)
    assert world.status(key).condition("RestartRequired") is None
    assert world.status(key).drift == ()
    assert world.condition(key, "Synced").status == "True"
