"""What the reconciler tests share: libvirt's in-process ``test:///default`` driver.

That driver's state is shared by every connection in the process, so every domain a test
makes is named ``ut-<random>-...`` (:func:`new_prefix`) and removed again, snapshots and
all, when :func:`opened` ends, whatever the test did. :class:`World` is what every
reconciler test drives: a store, the real ``Hypervisor`` on the driver and a ``FakeClock``;
a test module's own World adds its reconcilers and helpers (:class:`DomainWorld`, the
Domain reconciler with a disk root and manifests made from keywords, is the common one;
:func:`domain_world` opens it). The plain connection for
looking at libvirt "by hand" is the ``conn`` fixture (conftest.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import libvirt
import yaml

from kvmrec import store as stores
from kvmrec.api.kinds import ObjectKey
from kvmrec.api.manifests import parse_file
from kvmrec.backends import domain_xml
from kvmrec.backends.domain_xml import DomainConfig
from kvmrec.backends.libvirt.hypervisor import Hypervisor
from kvmrec.engine.clock import FakeClock
from kvmrec.reconcilers.domain import DomainReconciler
from kvmrec.store.base import Store
from kvmrec.store.records import Status

URI = "test:///default"
INACTIVE = libvirt.VIR_DOMAIN_XML_INACTIVE


def new_prefix() -> str:
    return f"ut-{uuid.uuid4().hex[:8]}-"


def remove_domains(conn: Any, prefix: str) -> None:
    """Every domain named ``prefix...``, destroyed and undefined with its snapshots."""
    for dom in conn.listAllDomains(0):
        if not dom.name().startswith(prefix):
            continue
        if dom.isActive():
            dom.destroy()
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)


@dataclass(frozen=True)
class Parts:
    prefix: str
    store: Store
    hv: Hypervisor
    clock: FakeClock


@contextmanager
def opened(tmp_path: Path, conn: Any, *, wall: datetime | None = None) -> Iterator[Parts]:
    """A fresh prefix, a store in ``tmp_path``, an open Hypervisor and a FakeClock; on exit
    the prefix's domains are removed and the rest closed."""
    prefix = new_prefix()
    store = stores.open(tmp_path / "state.db")
    hv = Hypervisor(URI)
    hv.open()
    clock = FakeClock() if wall is None else FakeClock(wall=wall)
    try:
        yield Parts(prefix, store, hv, clock)
    finally:
        remove_domains(conn, prefix)
        hv.close()
        store.close()


@dataclass
class World:
    prefix: str
    conn: Any
    store: Store
    hv: Hypervisor
    clock: FakeClock

    def name(self, suffix: str) -> str:
        return self.prefix + suffix

    def status(self, key: ObjectKey) -> Status:
        status = self.store.get_status(key)
        assert status is not None
        return status

    def reasons(self, key: ObjectKey) -> list[str]:
        return [e.reason for e in self.store.events(key, limit=1000)]

    def dom(self, name: str) -> Any:
        return self.conn.lookupByName(name)

    def config(self, name: str, flags: int = INACTIVE) -> DomainConfig:
        return domain_xml.parse(self.dom(name).XMLDesc(flags))

    def running(self, name: str) -> bool:
        return bool(self.dom(name).state()[0] == libvirt.VIR_DOMAIN_RUNNING)

    def exists(self, name: str) -> bool:
        return name in {d.name() for d in self.conn.listAllDomains(0)}


@dataclass
class DomainWorld(World):
    reconciler: DomainReconciler
    root: Path  # the disk root: images, seeds and installer media go here

    def apply(self, name: str, **spec: Any) -> ObjectKey:
        """Store a Domain manifest of ``spec`` (64 MiB, qemu unless it says otherwise)."""
        document = {
            "apiVersion": "kvmrec.io/v1alpha1",
            "kind": "Domain",
            "metadata": {"name": name},
            "spec": {"memory": "64Mi", "type": "qemu", **spec},
        }
        [manifest] = parse_file(f"{name}.yaml", yaml.safe_dump(document).encode())
        self.store.apply(manifest, self.clock.wall())
        return manifest.key

    def reconcile(self, key: ObjectKey) -> None:
        self.reconciler.reconcile(key)


@contextmanager
def domain_world(tmp_path: Path, conn: Any) -> Iterator[tuple[Parts, DomainReconciler, Path]]:
    """:func:`opened`, with a Domain reconciler whose disk root is ``tmp_path/images``."""
    root = tmp_path / "images"
    root.mkdir()
    with opened(tmp_path, conn) as w:
        yield w, DomainReconciler(w.store, w.hv, w.clock, disk_roots=[root]), root
