"""Volumes of libvirt storage pools: a disk named by pool and volume rather than by path.

Disks named by path are plain image files, made with qemu-img (backends/images.py).
"""

from __future__ import annotations

from xml.sax.saxutils import escape as xml_escape

import libvirt

from kvmrec.backends.libvirt.connection import OnConnection


class Storage(OnConnection):
    """The storage volumes of one libvirt connection."""

    def volume_path(self, pool: str, volume: str) -> str | None:
        """The path of a volume, or None if the pool has no such volume."""
        with self._call(f"read volume {pool}/{volume}") as conn:
            storage = conn.storagePoolLookupByName(pool)
            try:
                return str(storage.storageVolLookupByName(volume).path())
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                    return None
                raise

    def volume_capacity(self, pool: str, volume: str) -> int:
        with self._call(f"read volume {pool}/{volume}") as conn:
            vol = conn.storagePoolLookupByName(pool).storageVolLookupByName(volume)
            return int(vol.info()[1])

    def create_volume(self, pool: str, volume: str, fmt: str, size: int) -> None:
        xml = (
            f"<volume><name>{_escape(volume)}</name><capacity unit='bytes'>{size}</capacity>"
            f"<target><format type='{_escape(fmt)}'/></target></volume>"
        )
        with self._call(f"create volume {pool}/{volume}") as conn:
            conn.storagePoolLookupByName(pool).createXML(xml, 0)

    def grow_volume(self, pool: str, volume: str, size: int) -> None:
        with self._call(f"grow volume {pool}/{volume}") as conn:
            conn.storagePoolLookupByName(pool).storageVolLookupByName(volume).resize(size, 0)

    def delete_volume(self, pool: str, volume: str) -> None:
        with self._call(f"delete volume {pool}/{volume}") as conn:
            conn.storagePoolLookupByName(pool).storageVolLookupByName(volume).delete(0)


def _escape(text: str) -> str:
    return xml_escape(text, {"'": "&apos;", '"': "&quot;"})
