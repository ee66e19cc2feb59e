"""What a host offers its guests, as a fleet's scheduler needs to know it.

Memory and CPUs come from ``virNodeGetInfo``; the guest types from the capabilities
(``kvm`` where /dev/kvm works, else only ``qemu``, QEMU's TCG). Read on registration, so
a host reports what it has, not what a configuration file claims.
"""

from __future__ import annotations

from kvmrec.backends.libvirt.connection import OnConnection
from kvmrec.backends.libvirt.live import HostInventory


class Inventory(OnConnection):
    """``inventory()`` of the host behind a connection."""

    def inventory(self) -> HostInventory:
        with self._call("read the host's inventory") as conn:
            info = conn.getInfo()  # [model, memory MiB, cpus, mhz, nodes, sockets, cores, threads]
            caps = conn.getCapabilities()
            hostname = conn.getHostname()
        types = frozenset(t for t in ("kvm", "qemu", "test") if f"<domain type='{t}'" in caps)
        return HostInventory(
            memory_bytes=int(info[1]) * 1024 * 1024,
            vcpus=int(info[2]),
            domain_types=types,
            hostname=hostname,
        )
