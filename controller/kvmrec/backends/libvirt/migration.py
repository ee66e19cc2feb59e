"""Peer-to-peer live migration of this host's guests (backends/protocols.py's
``LiveMigrations``).

The source's libvirtd connects to the target's (``MigrationTarget.uri``) and QEMU streams
the guest to ``tcp://ADDRESS`` on a port of the target's own migration range; the
definition goes with it (PERSIST_DEST) and leaves the source (UNDEFINE_SOURCE). With copy
storage the local disks are copied too (NON_SHARED_DISK): libvirt needs each image to exist
at the target at the same path first, so it is made there through the target's libvirt
(a transient directory pool over the image's directory, a volume of the same format and
capacity) and removed again if the migration fails.

``migrateToURI3`` blocks until the job ends, so it runs on a thread of its own; the job's
statistics are read from the same connection meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape

import libvirt

from kvmrec.backends import migration_checks
from kvmrec.backends.libvirt.connection import OnConnection
from kvmrec.backends.protocols import MigrationTarget

log = logging.getLogger(__name__)

FLAGS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PEER2PEER
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
)


class Migrations(OnConnection):
    """Live migrations out of this connection's host. ``shared``: directories every host
    sees at the same path (disks there are not copied)."""

    shared: Sequence[str] = ()

    def blockers(self, name: str, target: MigrationTarget, *, copy_storage: bool) -> list[str]:
        with self.connection.domain_call(name, "check migration") as dom:
            if not dom.isActive():
                return [f"{name} is not running (only a running guest migrates live)"]
            xml = dom.XMLDesc(0)
            found = [
                f"it has {n} snapshot(s): libvirt cannot migrate internal snapshots"
                for n in [dom.snapshotNum(0)]
                if n
            ]
            host_cpu = dom.connect().getCapabilities()
        check = migration_checks.disks(xml, self.shared, copy_storage=copy_storage)
        found.extend(check.blockers)
        try:
            with _open(target.uri) as conn:
                found.extend(_cpu_lacks(conn, xml, host_cpu, target.host))
                for disk in check.local:
                    if _exists_at(conn, disk.path):
                        found.append(
                            f"disk {disk.dev}: {disk.path} exists on {target.host} already"
                        )
        except libvirt.libvirtError as exc:
            found.append(f"cannot reach {target.host}'s libvirt ({target.uri}): {exc}")
        return found

    def begin(self, name: str, target: MigrationTarget, *, copy_storage: bool) -> _Job:
        flags = FLAGS
        params: dict[str, Any] = {}
        if target.address:
            params[libvirt.VIR_MIGRATE_PARAM_URI] = f"tcp://{target.address}"
        made: list[str] = []
        with self.connection.domain_call(name, "read disks") as dom:
            if migration_checks.on_shared(dom.XMLDesc(0), self.shared):
                # libvirt cannot tell storage the operator declared shared (--shared-storage)
                # from a local directory; kvmrec takes the declaration as the check.
                flags |= libvirt.VIR_MIGRATE_UNSAFE
        if copy_storage:
            flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
            with self.connection.domain_call(name, "read disks") as dom:
                xml = dom.XMLDesc(0)
                sizes = {
                    d.dev: int(dom.blockInfo(d.path)[0])
                    for d in migration_checks.disks(xml, self.shared, copy_storage=True).local
                }
            local = migration_checks.disks(xml, self.shared, copy_storage=True).local
            with _open(target.uri) as conn:
                for disk in local:
                    _make_at(conn, disk, sizes[disk.dev])
                    made.append(disk.path)
            if target.address:
                params[libvirt.VIR_MIGRATE_PARAM_DISKS_URI] = f"tcp://{target.address}"
        job = _Job(self, name, target, flags, params, made)
        job.start()
        return job

    def runs_here(self, name: str) -> bool:
        with self._call(f"look up {name}") as conn:
            try:
                return bool(conn.lookupByName(name).isActive())
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return False
                raise

    def runs_at(self, name: str, target: MigrationTarget) -> bool:
        with _open(target.uri) as conn:
            try:
                return bool(conn.lookupByName(name).isActive())
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return False
                raise

    def evict(self, name: str) -> None:
        with self.connection.domain_call(name, "stop for a restart elsewhere") as dom:
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)


class _Job:
    """One migration on its thread."""

    def __init__(
        self,
        owner: Migrations,
        name: str,
        target: MigrationTarget,
        flags: int,
        params: Mapping[str, Any],
        made: list[str],
    ) -> None:
        self._owner = owner
        self._name = name
        self._target = target
        self._flags = flags
        self._params = dict(params)
        self._made = made
        self._done = threading.Event()
        self._error: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"migrate-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            with self._owner.connection.domain_call(self._name, "migrate") as dom:
                dom.migrateToURI3(self._target.uri, self._params, self._flags)
        except Exception as exc:
            self._error = str(exc)
            self._discard()
        finally:
            self._done.set()

    def _discard(self) -> None:
        """Remove the images made at the target for this migration (nothing else uses
        them: they did not exist before it)."""
        if not self._made:
            return
        with contextlib.suppress(libvirt.libvirtError), _open(self._target.uri) as conn:
            try:
                conn.lookupByName(self._name)
                return  # the guest is there after all: its disks stay
            except libvirt.libvirtError:
                pass
            for path in self._made:
                directory, base = os.path.split(path)
                with contextlib.suppress(libvirt.libvirtError), _pool_over(conn, directory) as pool:
                    pool.storageVolLookupByName(base).delete(0)

    def done(self) -> bool:
        return self._done.is_set()

    def progress(self) -> Mapping[str, int] | None:
        try:
            with self._owner.connection.domain_call(self._name, "read migration job") as dom:
                stats = dom.jobStats(0)
        except Exception:
            return None
        if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
            return None
        return {
            "data_total": int(stats.get("data_total", 0)),
            "data_remaining": int(stats.get("data_remaining", 0)),
            "data_processed": int(stats.get("data_processed", 0)),
            "rate": int(stats.get("memory_bps", 0)) + int(stats.get("disk_bps", 0)),
        }

    def abort(self) -> None:
        with (
            contextlib.suppress(Exception),
            self._owner.connection.domain_call(self._name, "abort migration") as dom,
        ):
            dom.abortJob()

    def error(self) -> str | None:
        return self._error

    def completed(self) -> Mapping[str, int]:
        try:
            with _open(self._target.uri) as conn:
                # KEEP_COMPLETED: reading them here must not take them from the operator's
                # `virsh domjobinfo --completed` on the destination.
                stats = conn.lookupByName(self._name).jobStats(
                    libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED
                    | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED
                )
        except libvirt.libvirtError:
            return {}
        return {
            "time_elapsed_ms": int(stats.get("time_elapsed", 0)),
            "downtime_ms": int(stats.get("downtime", 0)),
            "data_processed": int(stats.get("data_processed", 0)),
        }


@contextlib.contextmanager
def _open(uri: str) -> Iterator[Any]:
    conn = libvirt.open(uri)
    try:
        yield conn
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


def _cpu_lacks(conn: Any, xml: str, source_caps: str, target: str) -> list[str]:
    """The guest's CPU against what the target's hypervisor can give a guest of its type,
    arch and machine (libvirt's compareHypervisorCPU: the host's CPU alone says nothing
    of a TCG guest). A host-passthrough guest needs the source host's CPU there."""
    mode = migration_checks.cpu_mode(xml)
    if mode is None:
        return []
    root = ET.fromstring(xml)
    os_type = root.find("./os/type")
    arch = os_type.get("arch") if os_type is not None else None
    machine = os_type.get("machine") if os_type is not None else None
    if mode == "host-passthrough":
        host_cpu = ET.fromstring(source_caps).find("./host/cpu")
        if host_cpu is None:
            return []
        wanted = ET.tostring(host_cpu, encoding="unicode")
    else:
        wanted = migration_checks.cpu_xml(xml) or ""
    result = conn.compareHypervisorCPU(None, arch, machine, root.get("type"), wanted, 0)
    if result == libvirt.VIR_CPU_COMPARE_INCOMPATIBLE:
        return [f"its CPU ({mode}) is not one {target} offers"]
    return []


@contextlib.contextmanager
def _pool_over(conn: Any, directory: str) -> Iterator[Any]:
    """A transient directory pool of the target's over ``directory`` for one operation."""
    name = f"kvmrec-migrate-{uuid.uuid4().hex[:12]}"
    pool_xml = (
        f"<pool type='dir'><name>{name}</name>"
        f"<target><path>{escape(directory)}</path></target></pool>"
    )
    pool = conn.storagePoolCreateXML(pool_xml, 0)
    try:
        yield pool
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            pool.destroy()


def _exists_at(conn: Any, path: str) -> bool:
    directory, base = os.path.split(path)
    try:
        with _pool_over(conn, directory) as pool:
            pool.storageVolLookupByName(base)
            return True
    except libvirt.libvirtError:
        return False


def _make_at(conn: Any, disk: migration_checks.LocalDisk, size: int) -> None:
    directory, base = os.path.split(disk.path)
    vol_xml = (
        f"<volume><name>{escape(base)}</name><capacity unit='bytes'>{size}</capacity>"
        f"<target><format type='{escape(disk.format)}'/></target></volume>"
    )
    with _pool_over(conn, directory) as pool:
        pool.createXML(vol_xml, 0)
    log.info(
        "made %s (%s, %d bytes) at the target for a copy of its storage",
        disk.path,
        disk.format,
        size,
    )
