"""A Domain's ``cloudInit``: the sources of a cloud-init NoCloud seed, as the manifest names them.

Each of user-data, meta-data and network-config is inline text or a host file (under the
disk roots, checked like a disk's path, read when the seed is made). The seed itself, an
ISO 9660 volume labelled ``cidata``, is made by backends/seed_iso.py; reconcilers/seeds.py
decides when.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SeedSource:
    """One file of a cloud-init seed: inline text, or a host file read when the seed is made."""

    text: str | None = None
    file: str | None = None

    @classmethod
    def of(cls, value: Any) -> SeedSource | None:
        if value is None:
            return None
        if isinstance(value, Mapping):
            return cls(file=str(value["file"]))
        return cls(text=str(value))


@dataclass(frozen=True)
class CloudInit:
    """A NoCloud seed's sources (reconcilers/cloud_init.py makes the ISO of them)."""

    user_data: SeedSource
    meta_data: SeedSource | None = None
    network_config: SeedSource | None = None
    bus: str = "sata"  # sata: a cdrom; virtio: a read-only virtio disk

    @classmethod
    def from_spec(cls, cloud: Mapping[str, Any]) -> CloudInit:
        return cls(
            user_data=SeedSource.of(cloud["userData"]) or SeedSource(text=""),
            meta_data=SeedSource.of(cloud.get("metaData")),
            network_config=SeedSource.of(cloud.get("networkConfig")),
            bus=cloud.get("bus", "sata"),
        )

    def sources(self) -> dict[str, SeedSource | None]:
        """Manifest field names to sources."""
        return {
            "userData": self.user_data,
            "metaData": self.meta_data,
            "networkConfig": self.network_config,
        }
