"""Which libvirt errors mean "the guest agent does not answer", and when an agent gone
during a shutdown means the shutdown was taken."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import libvirt
import pytest

from kvmrec.backends.libvirt.guest_agent import GuestAgent, _silent


class Error:
    def __init__(self, code: int, message: str) -> None:
        self._code, self._message = code, message

    def get_error_code(self) -> int:
        return self._code

    def get_error_message(self) -> str:
        return self._message


def test_an_agent_lock_held_by_an_earlier_command_to_a_silent_agent_is_silence() -> None:
    held = "cannot acquire state change lock (held by agent=remoteDispatchDomainGetGuestInfo)"
    assert _silent(Error(libvirt.VIR_ERR_OPERATION_TIMEOUT, f"Timed out during operation: {held}"))
    assert _silent(Error(libvirt.VIR_ERR_AGENT_UNRESPONSIVE, "Guest agent is not responding"))


def test_other_timeouts_and_errors_are_not_silence() -> None:
    other = "cannot acquire state change lock (held by monitor=remoteDispatchDomainSuspend)"
    assert not _silent(Error(libvirt.VIR_ERR_OPERATION_TIMEOUT, other))
    assert not _silent(Error(libvirt.VIR_ERR_NO_DOMAIN, "held by agent, but not a timeout"))


class Dom:
    """A libvirt domain whose agent shutdown fails, in the given state afterwards."""

    def __init__(self, state: int) -> None:
        self._state = state
        self.asked: list[int] = []

    def shutdownFlags(self, flags: int) -> None:  # noqa: N802 (libvirt's name)
        self.asked.append(flags)
        raise libvirt.libvirtError("End of file from agent socket")

    def state(self) -> tuple[int, int]:
        return self._state, 0


class Domains:
    def __init__(self, dom: Dom) -> None:
        self._dom = dom

    @contextmanager
    def domain_call(self, name: str, what: str) -> Iterator[Dom]:
        yield self._dom


def test_an_agent_gone_because_the_guest_is_powering_off_has_taken_the_request() -> None:
    for state in (libvirt.VIR_DOMAIN_SHUTDOWN, libvirt.VIR_DOMAIN_SHUTOFF):
        dom = Dom(state)
        GuestAgent(Domains(dom)).shutdown("web", "agent")  # type: ignore[arg-type]
        assert dom.asked == [libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT]


def test_an_agent_failing_while_the_guest_runs_is_a_refusal_and_acpi_is_never_excused() -> None:
    with pytest.raises(libvirt.libvirtError):
        GuestAgent(Domains(Dom(libvirt.VIR_DOMAIN_RUNNING))).shutdown("web", "agent")  # type: ignore[arg-type]
    # Pressing the power button of a guest already off is no evidence that it worked.
    with pytest.raises(libvirt.libvirtError):
        GuestAgent(Domains(Dom(libvirt.VIR_DOMAIN_SHUTOFF))).shutdown("web", "acpi")  # type: ignore[arg-type]
