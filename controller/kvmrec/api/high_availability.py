"""A Domain's ``spec.highAvailability``: restarted elsewhere when its host dies.

As a Proxmox HA resource: ``restart`` asks for it; ``maxRestarts`` is how many failed
starts on one host are retried there before the guest is moved on; ``maxRelocations`` how
many times the fleet moves it to another host before it gives up (``HAFailed``) and leaves
it to the operator. An HA guest's disks must be on storage the hosts share (the scheduler
checks each host's ``shared_storage``), and libvirt's autostart stays off: where an HA
guest starts is the fleet's decision, never a rebooted host's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class HighAvailability:
    restart: bool = False
    max_restarts: int = 1
    max_relocations: int = 1

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> HighAvailability | None:
        """From a Domain's spec; None when it asks for no restart."""
        ha = spec.get("highAvailability") or {}
        if not ha.get("restart", False):
            return None
        return cls(True, int(ha.get("maxRestarts", 1)), int(ha.get("maxRelocations", 1)))
