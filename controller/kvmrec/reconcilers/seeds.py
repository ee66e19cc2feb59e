"""A Domain's cloud-init seed: where it lives, what it holds, and when it is made again.

``cloudInit`` becomes a NoCloud seed (backends/seed_iso.py) at ``<first disk
root>/<domain>-cidata.iso``, attached after the manifest's disks as a read-only sata cdrom
(or virtio disk). Its content is user-data, meta-data (by default the instance-id, the
domain's UUID, and local-hostname, its name) and network-config when given, each inline
or read from a file under the disk roots, which is checked like a disk's path.

The digest of that content is the attached disk's serial in the definition: a new content
is drift (``spec.cloudInit``) like any field, rewrites the definition and, since the
running guest keeps the seed it booted with, needs a restart (RestartRequired). The seed
file itself is made again whenever what it holds is not the content wanted. kvmrec stamps
the seed for its domain (the volume's application identifier): a file at that path it did
not make is never overwritten, and only its own seed is deleted with the domain. Neither
the sources nor the seed file move libvirt's fingerprint, so a domain with a seed is
reconciled on every resync: a changed source file is found within the resync interval.
"""

from __future__ import annotations

import os
from dataclasses import replace

from kvmrec.api import osinfo
from kvmrec.api.domain_parts import Disk
from kvmrec.api.kinds import DomainSpec
from kvmrec.backends import domain_xml, seed_iso
from kvmrec.reconcilers.disk_paths import DiskPolicy, own_file
from kvmrec.reconcilers.plans import Plan, Step
from kvmrec.store.records import Drift

# The seed's file name for each manifest field.
_FILES = {"userData": "user-data", "metaData": "meta-data", "networkConfig": "network-config"}
SERIAL_LENGTH = 20  # QEMU's limit for the serial of an ide/sata/virtio disk


def default_meta_data(name: str) -> str:
    return f"instance-id: {domain_xml.stable_uuid(name)}\nlocal-hostname: {name}\n"


def seed_details(spec: DomainSpec) -> dict[str, object]:
    """The seed in status details: its path, bus and content digest."""
    seed = spec.seed
    if seed is None:
        return {}
    return {"cloudInit": {"path": seed.path, "digest": seed.serial, "bus": seed.bus}}


class Seeds:
    """The Domain kind's cloud-init seeds (a part of reconcilers/domain.py)."""

    _disks: DiskPolicy | None

    def _seed_path(self, name: str) -> str:
        return own_file(self._disks, f"{name}-cidata.iso")

    def _seed_files(self, name: str, spec: DomainSpec) -> tuple[dict[str, bytes], str | None]:
        """The seed's files, or why they cannot be read (field by field)."""
        cloud = spec.cloud_init
        assert cloud is not None
        files: dict[str, bytes] = {}
        problems: list[str] = []
        for field, source in cloud.sources().items():
            if source is None:
                if field == "metaData":
                    files["meta-data"] = default_meta_data(name).encode()
                continue
            if source.file is None:
                files[_FILES[field]] = (source.text or "").encode()
                continue
            where = f"spec.cloudInit.{field}.file"
            problem = self._disks.problem(source.file) if self._disks is not None else None
            if problem:
                problems.append(f"{where}: {problem}")
                continue
            try:
                with open(source.file, "rb") as f:
                    files[_FILES[field]] = f.read()
            except OSError as exc:
                problems.append(f"{where}: {source.file}: {exc.strerror or exc}")
        return files, "; ".join(problems) or None

    def _with_seed(self, name: str, spec: DomainSpec) -> DomainSpec:
        """``spec`` with its seed disk as it is to be attached (serial: content digest)."""
        cloud = spec.cloud_init
        if cloud is None:
            return spec
        files, problem = self._seed_files(name, spec)
        seed = Disk(
            path=self._seed_path(name),
            format="raw",
            bus=cloud.bus,
            device="cdrom" if cloud.bus == "sata" else "disk",
            read_only=True,
            serial=None if problem else seed_iso.digest(files)[:SERIAL_LENGTH],
        )
        return replace(spec, seed=seed)

    def _os_and_seed(self, name: str, spec: DomainSpec) -> tuple[list[Step], Plan | None]:
        """The seed to (re)make; or a plan blocked by the seed or by an osVariant this
        host's osinfo-db does not have (any more)."""
        if spec.os_variant is not None and spec.os_id is None:
            unknown = osinfo.database().problem(spec.os_variant)
            return [], Plan(blocked=f"spec.osVariant: {unknown}", blocked_reason="UnknownOSVariant")
        steps, problem = self._seed_steps(name, spec)
        if problem:
            return [], Plan(blocked=problem, blocked_reason="SeedNotMade")
        return steps, None

    def _seed_steps(self, name: str, spec: DomainSpec) -> tuple[list[Step], str | None]:
        """The seed to (re)make; or why it cannot be."""
        seed = spec.seed
        if seed is None or seed.path is None:
            return [], None
        files, problem = self._seed_files(name, spec)
        if problem:
            return [], problem
        path = seed.path
        if self._disks is not None:
            refused = self._disks.problem(path)
            if refused:
                return [], f"spec.cloudInit (the seed {path}): {refused}"
        wanted = seed_iso.digest(files)
        actual: str | None = None
        if os.path.lexists(path):
            try:
                ident, held = seed_iso.read(path)
            except seed_iso.SeedError:
                ident, held = "", {}
            if ident != seed_iso.stamp(name):
                return [], (
                    f"spec.cloudInit: {path} exists and is not a seed kvmrec made for this "
                    "domain; it is left alone (move it away, or remove it)"
                )
            actual = seed_iso.digest(held)
            if actual == wanted:
                return [], None
        step = Step(
            "build-seed",
            (Drift("spec.cloudInit", wanted[:SERIAL_LENGTH], actual and actual[:SERIAL_LENGTH]),),
            f"{path}: NoCloud seed of {', '.join(sorted(files))}",
        )
        return [step], None

    def _build_seed(self, name: str, spec: DomainSpec) -> str:
        assert spec.seed is not None and spec.seed.path is not None
        files, problem = self._seed_files(name, spec)
        if problem:
            raise seed_iso.SeedError(problem)
        seed_iso.write(spec.seed.path, name, files)
        return f"made the cloud-init seed {spec.seed.path} ({', '.join(sorted(files))})"

    def _delete_seed(self, name: str, spec: DomainSpec) -> str | None:
        """Delete the domain's own seed; the path, or None when there was none of its own."""
        path = self._seed_path(name) if spec.cloud_init is not None else None
        if path is None or not os.path.exists(path) or not seed_iso.owned(path, name):
            return None
        os.unlink(path)
        return path
