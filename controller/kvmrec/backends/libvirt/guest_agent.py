"""Talking to the guest: the QEMU guest agent (qemu-ga), ACPI, and DHCP leases.

A guest with ``guestAgent`` has a virtio-serial port that qemu-ga inside it listens on;
libvirt speaks the agent's JSON protocol over it. Through it kvmrec learns the guest's
addresses, host name and OS, shuts the guest down cleanly, freezes its file systems for a
snapshot, sets its clock and a user's password. Agent calls fail fast when the agent is not
connected (libvirt tracks the port) and within about 5 s when qemu-ga is connected but not
answering (libvirt's guest-sync handshake), so no caller waits on a wedged guest for long.

Where the agent cannot answer, the host's own view fills in what it can: the DHCP lease a
libvirt network handed out for one of the guest's MACs.

Everything goes through libvirt's typed calls but two raw agent commands: ``guest-ping``
(``kvmrec guest ping``) and ``guest-fsfreeze-status`` (after a revert).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import libvirt
import libvirt_qemu

from kvmrec.backends.errors import BackendError
from kvmrec.backends.libvirt import names
from kvmrec.backends.libvirt.live import GuestAddress, GuestInfo
from kvmrec.backends.protocols import DomainCalls

# A guest agent command that takes longer than this has hung the guest's side.
COMMAND_TIMEOUT = 10

_FAMILIES = {
    libvirt.VIR_IP_ADDR_TYPE_IPV4: "ipv4",
    libvirt.VIR_IP_ADDR_TYPE_IPV6: "ipv6",
}


# How libvirt says the agent does not answer (COMMAND_TIMEOUT is libvirt 10's: looked up,
# not named, see libvirt/names.py).
_SILENT_AGENT = (
    "VIR_ERR_AGENT_UNRESPONSIVE",
    "VIR_ERR_AGENT_COMMAND_TIMEOUT",
    "VIR_ERR_AGENT_UNSYNCED",
)


def _silent(exc: Any) -> bool:
    """Whether libvirt says the agent does not answer: in so many words, or by timing out
    on the domain's agent lock that an earlier command to a silent agent still holds
    ("cannot acquire state change lock (held by agent=...)")."""
    code = exc.get_error_code()
    if code in names.codes(*_SILENT_AGENT):
        return True
    held = "held by agent" in (exc.get_error_message() or "")
    return held and code in names.codes("VIR_ERR_OPERATION_TIMEOUT")


def _powering_off(dom: Any) -> bool:
    """Whether the guest is shutting down or already off."""
    try:
        state, _reason = dom.state()
    except libvirt.libvirtError:
        return False
    return state in (libvirt.VIR_DOMAIN_SHUTDOWN, libvirt.VIR_DOMAIN_SHUTOFF)


class AgentUnavailable(BackendError):
    """The guest agent is not connected or does not answer."""


def _addresses(found: dict[str, Any], source: str) -> list[GuestAddress]:
    addresses = []
    for interface, item in sorted(found.items()):
        mac = (item.get("hwaddr") or "").lower()
        if interface == "lo" or mac in ("", "00:00:00:00:00:00"):
            continue
        for addr in item.get("addrs") or []:
            family = _FAMILIES.get(addr.get("type"), "other")
            if family == "ipv6" and str(addr.get("addr", "")).startswith("fe80:"):
                continue  # link-local: every interface has one, nobody connects to it
            addresses.append(
                GuestAddress(interface, mac, addr["addr"], int(addr["prefix"]), family, source)
            )
    return addresses


def _set_time_now(dom: Any) -> None:
    now = time.time()  # read at the last moment: the agent handshake takes a while
    seconds = int(now)
    dom.setTime({"seconds": seconds, "nseconds": int((now - seconds) * 1e9)}, 0)


class GuestAgent:
    """Guest-side operations on the domains of one libvirt connection."""

    def __init__(self, hypervisor: DomainCalls) -> None:
        self._hv = hypervisor

    def call(self, name: str, what: str, call: Callable[[Any], Any]) -> Any:
        """``call`` on the libvirt domain, an unresponsive agent as ``AgentUnavailable``."""
        with self._hv.domain_call(name, what) as dom:
            try:
                return call(dom)
            except libvirt.libvirtError as exc:
                if _silent(exc):
                    raise AgentUnavailable(
                        f"{what} ({name}): the guest agent does not answer: "
                        f"{exc.get_error_message()}"
                    ) from exc
                raise

    # -- what the guest is ---------------------------------------------------------------

    def info(self, name: str, *, agent: bool, leases: bool) -> GuestInfo:
        """The guest's addresses, host name and OS: from the agent when ``agent`` and it
        answers; addresses from libvirt's DHCP leases when the agent gave none and
        ``leases``."""
        answered = False
        offset: float | None = None
        details: dict[str, Any] = {}
        addresses: list[GuestAddress] = []
        if agent:
            try:
                details = self.call(
                    name,
                    "read guest information",
                    lambda dom: dom.guestInfo(
                        libvirt.VIR_DOMAIN_GUEST_INFO_OS | libvirt.VIR_DOMAIN_GUEST_INFO_HOSTNAME
                    ),
                )
                found = self.call(
                    name,
                    "read guest addresses",
                    lambda dom: dom.interfaceAddresses(
                        libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT
                    ),
                )
                answered = True
                addresses = _addresses(found or {}, "agent")
            except BackendError:
                answered = False
        if answered:
            # Its clock is a bonus: what the agent said stands without it.
            with contextlib.suppress(BackendError):
                offset = self.clock_offset(name)
        if not addresses and leases:
            found = self.call(
                name,
                "read DHCP leases",
                lambda dom: dom.interfaceAddresses(
                    libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE
                ),
            )
            addresses = _addresses(found or {}, "lease")
        return GuestInfo(
            agent=answered,
            hostname=details.get("hostname"),
            os=details.get("os.pretty-name") or details.get("os.name"),
            os_id=details.get("os.id"),
            kernel=details.get("os.kernel-release"),
            addresses=tuple(addresses),
            clock_offset=offset,
        )

    def clock_offset(self, name: str) -> float | None:
        """The guest clock minus the host's (read around the call), to 0.1 s; None when
        the agent cannot tell its time (a qemu-ga without guest-get-time); raises
        ``AgentUnavailable`` when it does not answer."""
        before = time.time()
        try:
            answer = self.call(name, "read the guest clock", lambda dom: dom.getTime(0))
        except AgentUnavailable:
            raise
        except BackendError:
            return None
        host = (before + time.time()) / 2
        guest = float(answer["seconds"]) + float(answer.get("nseconds", 0)) / 1e9
        return round(guest - host, 1)

    def ping(self, name: str) -> float:
        """Seconds the agent took to answer ``guest-ping``."""
        t0 = time.monotonic()
        self.command(name, {"execute": "guest-ping"})
        return time.monotonic() - t0

    # -- acting on the guest -------------------------------------------------------------

    def shutdown(self, name: str, method: str) -> None:
        """Ask the guest to power off: ``agent`` (qemu-ga runs shutdown) or ``acpi`` (the
        power button). Returns once asked; the guest takes its time."""
        flags = {
            "agent": libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT,
            "acpi": libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN,
        }[method]

        def ask(dom: Any) -> None:
            try:
                dom.shutdownFlags(flags)
            except libvirt.libvirtError:
                # qemu-ga may power a quick guest off before its answer reaches libvirt,
                # which then reports the agent gone: the request was taken all the same.
                if method == "agent" and _powering_off(dom):
                    return
                raise

        self.call(name, f"shut down through {method}", ask)

    def sync_clock(self, name: str, *, patience: float = 0.0) -> None:
        """Set the guest's clock to the host's (after a revert or a resume it is behind),
        trying again for ``patience`` seconds while the agent does not answer."""
        self._patiently(patience, lambda: self.call(name, "set the guest clock", _set_time_now))

    def thaw_if_frozen(self, name: str, *, patience: float = 0.0) -> bool:
        """Thaw a guest whose file systems are frozen; whether it was. A snapshot taken
        quiesced holds the guest's memory as it was, frozen: reverted to, the guest comes
        back frozen, its agent refusing everything but a thaw. An agent that does not
        answer within ``patience`` seconds is taken as nothing frozen."""
        try:
            state = self._patiently(
                patience, lambda: self.command(name, {"execute": "guest-fsfreeze-status"})
            )
        except AgentUnavailable:
            return False
        if state != "frozen":
            return False
        self.call(name, "thaw file systems", lambda dom: dom.fsThaw())
        return True

    @staticmethod
    def _patiently(patience: float, call: Callable[[], Any]) -> Any:
        """``call()``, again every half second for ``patience`` seconds while the agent
        does not answer (it reconnects a moment after a revert)."""
        deadline = time.monotonic() + patience
        while True:
            try:
                return call()
            except AgentUnavailable:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)

    def set_password(self, name: str, user: str, password: str) -> None:
        self.call(
            name,
            f"set the password of {user}",
            lambda dom: dom.setUserPassword(user, password, 0),
        )

    # -- raw agent commands ----------------------------------------------------------------

    def command(self, name: str, command: dict[str, Any]) -> Any:
        """One agent command; its ``return`` value."""
        text = json.dumps(command)
        answer = self.call(
            name,
            f"agent command {command.get('execute')}",
            lambda dom: libvirt_qemu.qemuAgentCommand(dom, text, COMMAND_TIMEOUT, 0),
        )
        return json.loads(answer).get("return")
