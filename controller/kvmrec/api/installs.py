"""A Domain's ``install``: virt-install's two ways of installing a guest from media.

``cdrom``: an installer ISO attached as a cdrom and booted first (virt-install --cdrom).
``location``: an installer ISO or a directory tree holding one, whose kernel and initrd
are booted directly with ``extraArgs`` as their command line (virt-install --location
--extra-args), so a serial-console install needs no graphics. Which files those are, and
how they are taken out of an ISO, is backends/installer_media.py; the phases of an install
(installing until the guest powers off, then installed for good) are reconcilers/installs.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Install:
    """Where a guest's installer comes from."""

    cdrom: str | None = None  # an installer ISO, booted from a cdrom
    location: str | None = None  # an installer ISO or tree: its kernel and initrd
    extra_args: str | None = None  # the installer kernel's command line (location)

    @classmethod
    def from_spec(cls, install: Mapping[str, Any]) -> Install:
        return cls(
            cdrom=install.get("cdrom"),
            location=install.get("location"),
            extra_args=install.get("extraArgs") or None,
        )

    @property
    def field(self) -> str:
        """The manifest field that names the media."""
        return "spec.install.cdrom" if self.cdrom is not None else "spec.install.location"

    @property
    def source(self) -> str:
        return self.cdrom if self.cdrom is not None else self.location or ""
