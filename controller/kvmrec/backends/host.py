"""Facts about the host itself that neither libvirt nor OVSDB answers."""

from __future__ import annotations

import os


def net_device_exists(name: str) -> bool:
    """Whether a network device (a Linux bridge, an OVS bridge's port) exists here."""
    return bool(name) and "/" not in name and os.path.exists(f"/sys/class/net/{name}")
