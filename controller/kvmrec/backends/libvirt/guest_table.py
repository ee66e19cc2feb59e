"""The rest of the guest agent's table: reboot, the guest clock, file systems, users.

What ``virsh reboot --mode agent``, ``domtime``, ``domfsinfo`` and ``guestinfo --user``
show, through libvirt's typed calls. Each asks qemu-ga one command; a qemu-ga too old for
it, or one that has it disabled (a guest with frozen file systems refuses all but a thaw),
is told apart from one that does not answer by asking ``guest-info`` first, so the error
names the command (``the guest agent does not support guest-get-users``).

A reboot goes through the agent when the guest has one that answers, else it presses the
ACPI power button with libvirt's reboot flag (libvirt restarts the guest once it powers
off); which of the two was used is returned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import libvirt

from kvmrec.backends.errors import BackendError
from kvmrec.backends.libvirt.guest_agent import AgentUnavailable, GuestAgent


class AgentUnsupported(BackendError):
    """The guest agent answers but does not offer (or has disabled) a command."""


@dataclass(frozen=True)
class GuestClock:
    """The guest's clock and its offset from the host's (guest minus host, seconds)."""

    guest: float  # seconds since the epoch, as the guest has it
    host: float  # the host's clock at the middle of the call
    offset: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "guest": _iso(self.guest),
            "host": _iso(self.host),
            "offsetSeconds": round(self.offset, 3),
        }


@dataclass(frozen=True)
class GuestFilesystem:
    mountpoint: str
    type: str
    name: str  # the guest's device name (sda1, vda, dm-0)
    devices: tuple[str, ...] = field(default_factory=tuple)  # the domain's target devs
    used: int | None = None  # bytes; None where the agent does not say
    total: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "mountpoint": self.mountpoint,
            "type": self.type,
            "name": self.name,
            "devices": list(self.devices),
            "usedBytes": self.used,
            "totalBytes": self.total,
        }


@dataclass(frozen=True)
class GuestUser:
    user: str
    domain: str | None  # a Windows guest's logon domain
    since: float | None  # login time, seconds since the epoch

    def as_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "domain": self.domain,
            "loginTime": _iso(self.since) if self.since is not None else None,
        }


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


class GuestTable:
    """reboot, time, fsinfo and users of the domains of one connection."""

    def __init__(self, agent: GuestAgent) -> None:
        self._agent = agent

    def supported(self, name: str, command: str) -> None:
        """Raise ``AgentUnsupported`` unless qemu-ga offers ``command`` and has it enabled;
        ``AgentUnavailable`` when it does not answer."""
        info = self._agent.command(name, {"execute": "guest-info"}) or {}
        offered = {
            c.get("name"): c.get("enabled", True) for c in info.get("supported_commands", [])
        }
        version = info.get("version", "?")
        if command not in offered:
            raise AgentUnsupported(
                f"the guest agent does not support {command} (qemu-ga {version})"
            )
        if not offered[command]:
            raise AgentUnsupported(
                f"the guest agent has {command} disabled (qemu-ga {version}; while the "
                "guest's file systems are frozen it refuses all but a thaw)"
            )

    def reboot(self, name: str, *, agent: bool) -> str:
        """Reboot the guest: ``agent`` when it has one that answers, else ``acpi``."""
        if agent:
            try:
                self.supported(name, "guest-shutdown")
                self._agent.call(
                    name,
                    "reboot through the guest agent",
                    lambda dom: dom.reboot(libvirt.VIR_DOMAIN_REBOOT_GUEST_AGENT),
                )
                return "agent"
            except (AgentUnavailable, AgentUnsupported):
                pass
        self._agent.call(
            name,
            "reboot through ACPI",
            lambda dom: dom.reboot(libvirt.VIR_DOMAIN_REBOOT_ACPI_POWER_BTN),
        )
        return "acpi"

    def clock(self, name: str) -> GuestClock:
        """The guest clock (guest-get-time) against the host's, read around the call."""
        self.supported(name, "guest-get-time")
        before = time.time()
        answer = self._agent.call(name, "read the guest clock", lambda dom: dom.getTime(0))
        after = time.time()
        guest = float(answer["seconds"]) + float(answer.get("nseconds", 0)) / 1e9
        host = (before + after) / 2
        return GuestClock(guest=guest, host=host, offset=guest - host)

    def filesystems(self, name: str) -> list[GuestFilesystem]:
        """Mounted file systems (guest-get-fsinfo): mount point, type, devices, and used
        and total bytes where the agent reports them (qemu-ga 5.0 and later)."""
        self.supported(name, "guest-get-fsinfo")
        found = self._agent.call(name, "read the guest's file systems", lambda dom: dom.fsInfo(0))
        sizes = self._sizes(name)
        return [
            GuestFilesystem(
                mountpoint=mountpoint,
                type=fstype,
                name=device,
                devices=tuple(targets or ()),
                used=sizes.get(mountpoint, (None, None))[0],
                total=sizes.get(mountpoint, (None, None))[1],
            )
            for mountpoint, device, fstype, targets in found or []
        ]

    def _sizes(self, name: str) -> dict[str, tuple[int | None, int | None]]:
        """(used, total) bytes by mount point, from libvirt's guest info."""
        info = self._agent.call(
            name,
            "read the guest's file system sizes",
            lambda dom: dom.guestInfo(libvirt.VIR_DOMAIN_GUEST_INFO_FILESYSTEM, 0),
        )
        sizes: dict[str, tuple[int | None, int | None]] = {}
        for i in range(int((info or {}).get("fs.count", 0))):
            mountpoint = info.get(f"fs.{i}.mountpoint")
            if mountpoint is None:
                continue
            used, total = info.get(f"fs.{i}.used-bytes"), info.get(f"fs.{i}.total-bytes")
            sizes[mountpoint] = (
                int(used) if used is not None else None,
                int(total) if total is not None else None,
            )
        return sizes

    def users(self, name: str) -> list[GuestUser]:
        """Who is logged in to the guest (guest-get-users), and since when."""
        self.supported(name, "guest-get-users")
        info = self._agent.call(
            name,
            "read the guest's users",
            lambda dom: dom.guestInfo(libvirt.VIR_DOMAIN_GUEST_INFO_USERS, 0),
        )
        users = []
        for i in range(int((info or {}).get("user.count", 0))):
            login = info.get(f"user.{i}.login-time")  # milliseconds
            users.append(
                GuestUser(
                    user=str(info.get(f"user.{i}.name", "")),
                    domain=info.get(f"user.{i}.domain"),
                    since=float(login) / 1000 if login is not None else None,
                )
            )
        return users
