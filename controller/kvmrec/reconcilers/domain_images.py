"""A Domain's disk images: which may be used, which to create or grow, and how.

Every path a Domain names must be a file under the configured disk roots
(reconcilers/disk_paths.py); an image is created (empty, an overlay, a copy of another
domain's disk), grown but never shrunk, and deleted with the domain only when asked and
under the roots.
"""

from __future__ import annotations

from kvmrec.api.domain_parts import Disk
from kvmrec.api.kinds import DomainSpec
from kvmrec.backends import domain_xml, images, protocols
from kvmrec.backends.errors import BackendError
from kvmrec.backends.libvirt.live import LiveDomain
from kvmrec.reconcilers.disk_paths import DiskPolicy
from kvmrec.reconcilers.domain_diff import mem
from kvmrec.reconcilers.plans import Step
from kvmrec.store.records import Drift


class DiskImages:
    """The Domain kind's handling of disk images (a part of reconcilers/domain.py)."""

    _hv: protocols.DomainHost
    _disks: DiskPolicy | None

    def _refused_disk_paths(self, spec: DomainSpec) -> str | None:
        """Every path of ``spec`` that may not be used as a disk, field by field."""
        policy = self._disks
        if policy is None:
            return None
        problems: list[str] = []

        def check(field: str, path: str | None) -> None:
            problem = policy.problem(path) if path else None
            if problem:
                problems.append(f"{field}: {problem}")

        check("spec.os.kernel", spec.kernel)
        check("spec.os.initrd", spec.initrd)
        for index, disk in enumerate(spec.disks):
            field = f"spec.disks[{index}]"
            check(f"{field}.path", disk.path)
            check(f"{field}.backingImage", disk.backing_image)
            clone = disk.clone_from
            if clone is not None and clone.path:
                check(f"{field}.cloneFrom.path", clone.path)
            elif clone is not None and disk.path and not images.exists(disk.path):
                # The copy reads whatever that domain's disk is: the same rule applies.
                source = self._clone_source(disk)
                check(f"{field}.cloneFrom (disk {clone.disk} of domain {clone.domain})", source)
        return "; ".join(problems) or None

    def _image_steps(
        self, name: str, spec: DomainSpec, live: LiveDomain | None
    ) -> tuple[list[Step], str | None]:
        """Images to create or grow; or why a disk cannot be had."""
        steps: list[Step] = []
        for field, path in (("spec.os.kernel", spec.kernel), ("spec.os.initrd", spec.initrd)):
            if path is not None and not images.exists(path):
                return steps, f"{field}: {path} does not exist"
        devs = domain_xml.target_devs(spec.disks)
        for index, (disk, dev) in enumerate(zip(spec.disks, devs, strict=True)):
            field = f"spec.disks[{index}]"
            if disk.path:
                present = images.exists(disk.path)
            else:
                present = self._hv.volume_path(disk.pool or "", disk.volume or "") is not None
            if not present:
                if disk.device == "cdrom":
                    return steps, f"{field}.path: {disk.path} does not exist"
                if disk.clone_from is not None:
                    source = self._clone_source(disk)
                    if source is None or not images.exists(source):
                        what = source or f"disk {disk.clone_from.disk} of {disk.clone_from.domain}"
                        return steps, f"{field}.cloneFrom: {what} does not exist"
                    how = f"copy of {source}"
                elif disk.backing_image is not None:
                    if not images.exists(disk.backing_image):
                        return steps, f"{field}.backingImage: {disk.backing_image} does not exist"
                    how = f"overlay on {disk.backing_image}"
                elif disk.size is not None:
                    how = f"{mem(disk.size)} {disk.format}"
                else:
                    return steps, (
                        f"{field}: {disk.source} does not exist and the disk has no size, "
                        "backingImage or cloneFrom to create it from"
                    )
                steps.append(
                    Step(
                        "create-image",
                        (Drift(field, disk.source, None),),
                        f"{disk.source}: {how}",
                        item=index,
                    )
                )
                continue
            if disk.size is None or disk.device == "cdrom":
                continue
            current = self._image_size(name, disk, dev, live)
            if current < disk.size:
                steps.append(
                    Step(
                        "grow-image",
                        (Drift(f"{field}.size", mem(disk.size), mem(current)),),
                        f"{disk.source}: never shrunk, grown when asked",
                        item=index,
                    )
                )
        return steps, None

    def _image_size(self, name: str, disk: Disk, dev: str, live: LiveDomain | None) -> int:
        if disk.path is None:
            return self._hv.volume_capacity(disk.pool or "", disk.volume or "")
        if live is not None and live.running is not None:
            try:
                return self._hv.block_size(name, dev)
            except BackendError:
                pass  # not attached to the running guest (yet): read the file
        return images.virtual_size(disk.path)

    def _clone_source(self, disk: Disk) -> str | None:
        clone = disk.clone_from
        if clone is None:
            return None
        if clone.path:
            return clone.path
        other = self._hv.get_domain(clone.domain or "")
        if other is None or clone.disk >= len(other.config.disks):
            return None
        source = other.config.disks[clone.disk]
        if source.path:
            return source.path
        return self._hv.volume_path(source.pool or "", source.volume or "")

    def _create_image(self, disk: Disk) -> None:
        if disk.path is None:
            self._hv.create_volume(disk.pool or "", disk.volume or "", disk.format, disk.size or 0)
        elif disk.clone_from is not None:
            source = self._clone_source(disk)
            if source is None:
                raise BackendError(f"{disk.path}: the clone source vanished")
            images.copy(source, disk.path, disk.format)
            if disk.size is not None and images.virtual_size(disk.path) < disk.size:
                images.grow(disk.path, disk.size)
        elif disk.backing_image is not None:
            images.create_overlay(disk.path, disk.backing_image, disk.size)
        else:
            images.create(disk.path, disk.format, disk.size or 0)

    def _grow_image(self, name: str, spec: DomainSpec, index: int, live: LiveDomain | None) -> None:
        disk = spec.disks[index]
        size = disk.size or 0
        if live is not None and live.running is not None:
            self._hv.block_resize(name, domain_xml.target_devs(spec.disks)[index], size)
        elif disk.path is None:
            self._hv.grow_volume(disk.pool or "", disk.volume or "", size)
        else:
            images.grow(disk.path, size)

    def _deletable(self, disk: Disk) -> bool:
        """The disk's image goes with the domain: asked for, and (for a file) under the
        disk roots, so a manifest can never make kvmrec delete a file elsewhere."""
        if not disk.delete_image or disk.device != "disk":
            return False
        if disk.path is None or self._disks is None:
            return True
        return self._disks.problem(disk.path) is None
