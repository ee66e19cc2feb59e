"""Which libvirt errors mean "the guest agent does not answer"."""

from __future__ import annotations

import libvirt

from kvmrec.backends.libvirt.guest_agent import _silent


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
