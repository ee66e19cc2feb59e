"""What libvirt has: a domain, a network, what a guest says, as read back in kvmrec's terms.

Plain data, free of the libvirt binding, so the reconcilers, the CLI and the in-memory fakes
of the tests can hold them without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kvmrec.backends.domain_xml import DomainConfig
from kvmrec.backends.network_xml import NetworkConfig

# What a guest runs with (its live XML; for a stopped guest, its definition), whether it is
# paused, and its autostart flag. A definition edited while the guest runs does not show
# here, but raises a DEFINED event, and the periodic full resync catches the rest. Kept
# whole rather than hashed: comparing two equal strings is a memcmp, cheaper than hashing.
Fingerprint = tuple[str, bool, bool]

# Pauses libvirt makes for a job of its own and ends itself: taking a snapshot (libvirt 9.0
# pauses an internal snapshot's guest with SAVE), saving, dumping, migrating, starting a
# guest (a revert starts QEMU paused and loads the snapshot), shutting down. A post-copy
# migration that failed leaves the guest paused for the operator to recover; resuming it
# there could run it twice. The words are those of libvirt/names.py's ``reason_word``.
JOB_PAUSES = frozenset(
    {
        "migration",
        "save",
        "dump",
        "snapshot",
        "starting-up",
        "shutting-down",
        "postcopy",
        "postcopy-failed",
    }
)


@dataclass(frozen=True)
class LiveDomain:
    """A domain as libvirt has it."""

    config: DomainConfig  # the persistent definition
    state: str  # running | paused | shutoff | crashed | ...
    # Why it is in that state, as a word (libvirt/names.py): for shutoff, "shutdown" means
    # the guest did it; for paused, "user" means someone asked.
    reason: str
    autostart: bool
    fingerprint: Fingerprint  # changes whenever any of the above does
    running: DomainConfig | None = None  # what the running guest was started with / has now
    busy: bool = False  # libvirt is running a job of its own on it (snapshot, revert, ...)

    @property
    def active(self) -> bool:
        return self.state not in ("shutoff", "crashed", "nostate")

    @property
    def paused_for_job(self) -> bool:
        """libvirt paused the guest for a job of its own, and resumes it when it ends."""
        return self.state == "paused" and self.reason in JOB_PAUSES


@dataclass(frozen=True)
class LiveNetwork:
    """A libvirt network as libvirt has it."""

    config: NetworkConfig  # the persistent definition
    active: bool
    autostart: bool
    running: NetworkConfig | None = None  # what the running network has


@dataclass(frozen=True)
class GuestAddress:
    interface: str
    mac: str
    address: str
    prefix: int
    family: str  # ipv4 | ipv6
    source: str  # agent | lease


@dataclass(frozen=True)
class GuestInfo:
    """What the guest says about itself (or, without an agent, what the host knows)."""

    agent: bool  # the agent answered
    hostname: str | None = None
    os: str | None = None  # the OS's pretty name
    os_id: str | None = None
    kernel: str | None = None
    addresses: tuple[GuestAddress, ...] = field(default_factory=tuple)
    # The guest clock minus the host's, in seconds, when the agent told its time.
    clock_offset: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "clockOffsetSeconds": self.clock_offset,
            "hostname": self.hostname,
            "os": self.os,
            "osId": self.os_id,
            "kernel": self.kernel,
            "addresses": [
                {
                    "interface": a.interface,
                    "mac": a.mac,
                    "address": a.address,
                    "prefix": a.prefix,
                    "family": a.family,
                    "source": a.source,
                }
                for a in self.addresses
            ],
        }


@dataclass(frozen=True)
class HostInventory:
    memory_bytes: int
    vcpus: int
    domain_types: frozenset[str]  # "kvm", "qemu", ("test" on libvirt's test driver)
    hostname: str
