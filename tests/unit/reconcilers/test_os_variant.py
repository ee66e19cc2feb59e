"""A Domain's osVariant against libvirt's ``test:///default``: the libosinfo metadata, the
defaults it gives, diffed like written fields on an existing guest, and BelowOSMinimum."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import testdriver
import yaml
from test_cloud_init_seed import World

from kvmrec.api.manifests import parse_file
from kvmrec.reconcilers import adoption
from kvmrec.reconcilers.domain import DomainReconciler

pytestmark = pytest.mark.skipif(
    not Path("/usr/share/osinfo/os/debian.org").is_dir(), reason="no osinfo-db here"
)
DEBIAN11 = "http://debian.org/debian/11"


@pytest.fixture
def world(tmp_path: Path, conn: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.delenv("OSINFO_SYSTEM_DIR", raising=False)
    root = tmp_path / "images"
    root.mkdir()
    with testdriver.opened(tmp_path, conn) as w:
        reconciler = DomainReconciler(w.store, w.hv, w.clock, disk_roots=[root])
        yield World(w.prefix, conn, w.store, w.hv, w.clock, reconciler, root)


def test_a_new_guest_gets_the_metadata_and_the_defaults(world: World) -> None:
    name = world.name("os")
    key = world.apply(
        name, memory="1Gi", osVariant="debian11", interfaces=[{"name": "n", "bridge": "br0"}]
    )
    world.reconcile(key)
    config = world.config(name)
    assert config.os_id == DEBIAN11
    assert config.machine == "q35"
    assert [i.model for i in config.interfaces] == ["virtio"]
    assert world.status(key).condition("BelowOSMinimum") is None
    assert not world.reconciler.plan(world.store.get(key)).steps  # type: ignore[arg-type]


def test_choosing_a_variant_for_an_existing_guest_is_a_diff(world: World) -> None:
    name = world.name("ex")
    key = world.apply(name, memory="1Gi", os={"machine": "pc"})
    world.reconcile(key)
    assert world.config(name).machine == "pc" and world.config(name).os_id is None

    world.apply(name, memory="1Gi", osVariant="debian11")
    plan = world.reconciler.plan(world.store.get(key))  # type: ignore[arg-type]
    update = next(s for s in plan.steps if s.action == "update")
    fields = {d.field: (d.desired, d.actual) for d in update.fields}
    assert fields == {"spec.os.machine": ("q35", "pc"), "spec.osVariant": (DEBIAN11, None)}
    at_restart = next(s for s in plan.steps if s.action == "update-at-restart")
    assert [d.field for d in at_restart.fields] == ["spec.os.machine"]  # metadata is no restart

    world.reconcile(key)
    assert world.config(name).os_id == DEBIAN11
    restart = world.status(key).condition("RestartRequired")
    assert restart is not None and "spec.os.machine" in restart.message


def test_memory_below_the_minimum_is_a_warning_condition(world: World) -> None:
    name = world.name("lo")
    key = world.apply(name, memory="256Mi", osVariant="debian11")
    world.reconcile(key)
    assert world.running(name)  # made as asked
    cond = world.status(key).condition("BelowOSMinimum")
    assert cond is not None and cond.status == "True"
    assert cond.message == "spec.memory 256 MiB is below the 1024 MiB Debian 11 needs"
    events = world.store.events(key, limit=100)
    assert any(e.type == "Warning" and e.reason == "BelowMinimum" for e in events)

    world.apply(name, memory="1Gi", maxMemory="2Gi", osVariant="debian11")
    world.reconcile(key)
    cond = world.status(key).condition("BelowOSMinimum")
    assert cond is not None and cond.status == "False"


def test_an_imported_virt_install_guest_keeps_its_variant_and_adoption_changes_nothing(
    world: World,
) -> None:
    name = world.name("vi")
    world.conn.defineXML(
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>1024</memory>"
        "<metadata><libosinfo:libosinfo "
        'xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">'
        '<libosinfo:os id="http://debian.org/debian/11"/></libosinfo:libosinfo></metadata>'
        "<os><type arch='x86_64' machine='pc'>hvm</type></os>"
        "<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file='{world.root}/vi.qcow2'/><target dev='sda' bus='sata'/>"
        "<serial>virt-install-disk</serial></disk></devices></domain>"
    )
    live = world.hv.get_domain(name)
    assert live is not None
    manifest = adoption.manifest_for(live)
    assert manifest["spec"]["osVariant"] == "debian11"
    assert manifest["spec"]["os"] == {"firmware": "bios", "machine": "pc"}
    (world.root / "vi.qcow2").write_bytes(b"")
    [parsed] = parse_file(f"{name}.yaml", yaml.safe_dump(manifest).encode())
    world.store.apply(parsed, world.clock.wall())
    key = parsed.key
    plan = world.reconciler.plan(world.store.get(key))  # type: ignore[arg-type]
    changes = [s for s in plan.steps if s.action not in ("adopt", "start")]
    assert changes == []
