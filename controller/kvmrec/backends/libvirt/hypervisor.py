"""``Hypervisor``: every libvirt concern on one shared connection, as the service uses it.

It is the domains, snapshots, storage and networks of one ``Connection``
(libvirt/connection.py), and opens, closes and reconnects it. It satisfies each Protocol
of backends/protocols.py that libvirt answers; callers are typed against those.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from kvmrec.backends.libvirt.connection import Connection
from kvmrec.backends.libvirt.domains import Domains
from kvmrec.backends.libvirt.inventory import Inventory
from kvmrec.backends.libvirt.migration import Migrations
from kvmrec.backends.libvirt.networks import Networks
from kvmrec.backends.libvirt.snapshots import Snapshots
from kvmrec.backends.libvirt.storage import Storage


class Hypervisor(Domains, Snapshots, Storage, Networks, Inventory, Migrations):
    """Domains, snapshots, storage volumes, networks, the host's inventory and live
    migrations out of it on one libvirt URI."""

    def __init__(
        self,
        uri: str,
        *,
        on_domain_event: Callable[[str], None] | None = None,
        on_network_event: Callable[[str], None] | None = None,
        on_reconnect: Callable[[], None] | None = None,
        on_disconnect: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(
            Connection(
                uri,
                on_domain_event=on_domain_event,
                on_network_event=on_network_event,
                on_reconnect=on_reconnect,
                on_disconnect=on_disconnect,
            )
        )

    @property
    def connected(self) -> bool:
        return self.connection.connected

    def open(self) -> None:
        """Connect now; raises ``Unavailable`` if libvirtd does not answer."""
        self.connection.open()

    def close(self) -> None:
        self.connection.close()

    def start_reconnecting(self) -> None:
        """Keep trying to connect in the background (the service started before libvirtd)."""
        self.connection.start_reconnecting()

    def domain_call(self, name: str, what: str) -> AbstractContextManager[Any]:
        """The libvirt domain ``name`` for one operation of the guest agent's."""
        return self.connection.domain_call(name, what)
