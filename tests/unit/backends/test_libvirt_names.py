"""libvirt constants a binding may lack, and the words for domain state reasons.

A binding built against an older libvirt lacks the newer constants; the error handling that
names them must work all the same, so these tests take them away (monkeypatch) and run it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import libvirt
import pytest

from kvmrec.backends import protocols
from kvmrec.backends.libvirt import live
from kvmrec.backends.libvirt import names as libvirt_names
from kvmrec.backends.libvirt.guest_agent import AgentUnavailable, GuestAgent

# Newer than libvirt 9.0, or as if they were: an older binding may lack any of them.
AGENT_CONSTANTS = (
    "VIR_ERR_AGENT_UNRESPONSIVE",
    "VIR_ERR_AGENT_COMMAND_TIMEOUT",
    "VIR_ERR_AGENT_UNSYNCED",
)


def _error(code: int, message: str) -> libvirt.libvirtError:
    exc = libvirt.libvirtError(message)
    exc.err = (code, libvirt.VIR_FROM_QEMU, message, 2, None, None, None, 0, 0)
    return exc


class _Domain:
    def __init__(self, error: libvirt.libvirtError) -> None:
        self.error = error

    def shutdownFlags(self, _flags: int) -> None:  # noqa: N802 (libvirt's name)
        raise self.error

    def state(self) -> tuple[int, int]:
        return libvirt.VIR_DOMAIN_RUNNING, 1  # the guest runs: the agent's failure stands


class _Hypervisor:
    """Just what GuestAgent uses: one domain whose every call fails with ``error``."""

    def __init__(self, error: libvirt.libvirtError) -> None:
        self.dom = _Domain(error)

    @contextmanager
    def domain_call(self, _name: str, _what: str) -> Iterator[Any]:
        yield self.dom


def _agent(code: int) -> GuestAgent:
    fake = _Hypervisor(_error(code, "Guest agent is not responding: not connected"))
    return GuestAgent(cast(protocols.DomainCalls, fake))


UNRESPONSIVE = 86  # VIR_ERR_AGENT_UNRESPONSIVE in every libvirt since 0.10
UNSYNCED = 97  # VIR_ERR_AGENT_UNSYNCED


def test_libvirts_codes_are_what_this_file_assumes() -> None:
    assert libvirt.VIR_ERR_AGENT_UNRESPONSIVE == UNRESPONSIVE
    assert libvirt.VIR_ERR_AGENT_UNSYNCED == UNSYNCED


@pytest.mark.parametrize("code", [UNRESPONSIVE, UNSYNCED], ids=["unresponsive", "unsynced"])
def test_an_agent_that_does_not_answer_is_agent_unavailable(code: int) -> None:
    with pytest.raises(AgentUnavailable, match="does not answer"):
        _agent(code).shutdown("g", "agent")


def test_the_agent_error_handling_works_with_the_newer_constants_absent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(libvirt, "VIR_ERR_AGENT_COMMAND_TIMEOUT", raising=False)
    monkeypatch.delattr(libvirt, "VIR_ERR_AGENT_UNSYNCED")
    assert libvirt_names.constant("VIR_ERR_AGENT_COMMAND_TIMEOUT") is None
    assert libvirt_names.codes(*AGENT_CONSTANTS) == {UNRESPONSIVE}
    with pytest.raises(AgentUnavailable):
        _agent(UNRESPONSIVE).shutdown("g", "agent")
    # A code this binding does not name cannot be matched: the error goes on as it is,
    # never as an AttributeError.
    with pytest.raises(libvirt.libvirtError) as raised:
        _agent(UNSYNCED).shutdown("g", "acpi")
    assert not isinstance(raised.value, AgentUnavailable)


def test_the_agent_error_handling_works_with_every_agent_constant_absent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in AGENT_CONSTANTS:
        monkeypatch.delattr(libvirt, name, raising=False)
    with pytest.raises(libvirt.libvirtError):
        _agent(UNRESPONSIVE).shutdown("g", "agent")


@pytest.mark.parametrize(
    ("state", "reason", "word"),
    [
        (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_BOOTED, "booted"),
        (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_FROM_SNAPSHOT, "from-snapshot"),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED, "destroyed"),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN, "shutdown"),
        (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_SNAPSHOT, "snapshot"),
        (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_SAVE, "save"),
        (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_USER, "user"),
        (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_STARTING_UP, "starting-up"),
        (libvirt.VIR_DOMAIN_CRASHED, libvirt.VIR_DOMAIN_CRASHED_PANICKED, "panicked"),
    ],
)
def test_state_reasons_are_words(state: int, reason: int, word: str) -> None:
    assert libvirt_names.reason_word(state, reason) == word


def test_a_reason_this_binding_does_not_name_says_so() -> None:
    assert libvirt_names.reason_word(libvirt.VIR_DOMAIN_PAUSED, 999) == "reason 999"


def test_one_code_means_different_reasons_in_different_states() -> None:
    # 1 is BOOTED when running, USER when paused, SHUTDOWN when shut off.
    assert libvirt_names.reason_word(libvirt.VIR_DOMAIN_RUNNING, 1) == "booted"
    assert libvirt_names.reason_word(libvirt.VIR_DOMAIN_PAUSED, 1) == "user"
    assert libvirt_names.reason_word(libvirt.VIR_DOMAIN_SHUTOFF, 1) == "shutdown"


def test_libvirts_own_pauses_are_not_a_users() -> None:
    assert {"snapshot", "save", "dump", "migration", "starting-up"} <= live.JOB_PAUSES
    assert not {"user", "ioerror", "watchdog", "from-snapshot"} & live.JOB_PAUSES
