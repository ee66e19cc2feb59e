"""What the reconciler tests share: libvirt's in-process ``test:///default`` driver.

That driver's state is shared by every connection in the process, so every domain a test
makes is named ``ut-<random>-...`` (:func:`new_prefix`) and removed again, snapshots and
all, when :func:`opened` ends, whatever the test did. :class:`World` is what every
reconciler test drives: a store, the real ``Hypervisor`` on the driver and a ``FakeClock``;
a test module's own World adds its reconcilers and helpers. The plain connection for
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

from kvmrec import store as stores
from kvmrec.api.kinds import ObjectKey
from kvmrec.backends import domain_xml
from kvmrec.backends.domain_xml import DomainConfig
from kvmrec.backends.libvirt.hypervisor import Hypervisor
from kvmrec.engine.clock import FakeClock
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
