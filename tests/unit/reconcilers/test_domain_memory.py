"""The Domain's memory: its round trip through status details, and status details as the
version before the memory was typed wrote them, read and carried on by this one.

The ``OLD_*`` dicts are what that version stored on ``test:///default`` (captured from its
reconciler with the stopping harness below; only the uuid and times are the test's own).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import libvirt
from hypothesis import given
from hypothesis import strategies as st
from test_domain_stopping import make  # noqa: F401  (the fixture)

from kvmrec.reconcilers.domain_memory import KEYS, CrashLoop, DomainMemory, Stop

# A stop under runStrategy Halted, the power button pressed, the guest not off yet.
OLD_STOPPING: dict[str, Any] = {
    "lastStart": "2024-01-01T00:00:01+00:00",
    "quickFailures": 0,
    "reason": "booted",
    "state": "running",
    "stopping": {
        "asked": ["acpi"],
        "purpose": "halt",
        "since": "2024-01-01T00:00:02+00:00",
        "tried": ["acpi"],
    },
    "uuid": "b2c66188-6a6f-5159-ae73-c526b693552f",
}
# A guest destroyed by hand twice within a minute of its start: the second stop is seen.
OLD_CRASHED: dict[str, Any] = {
    "lastFailure": "2024-01-01T00:00:07+00:00",
    "lastStart": "2024-01-01T00:00:05+00:00",
    "quickFailures": 1,
    "reason": "destroyed",
    "state": "shutoff",
    "uuid": "0402e0d0-f2e6-5787-bb07-3357350c28ab",
}
OLD_GUEST: dict[str, Any] = {
    "guest": {"hostname": "web-1.lan", "addresses": [{"address": "10.0.0.5", "source": "agent"}]},
    "guestReads": 3,
    "lastStop": {"method": "agent", "seconds": 2.5},
    "restartFor": ["spec.vcpus=1"],
    "restartDidNotFix": ["spec.memory='64 MiB'"],
    "restarting": True,
    "onceGeneration": 4,
}

_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(datetime.isoformat)
_names = st.lists(st.sampled_from(["agent", "acpi"]), max_size=2)
_drift = st.lists(st.text(max_size=12), max_size=3)
_shape = st.fixed_dictionaries(
    {},
    optional={
        "stopping": st.fixed_dictionaries(
            {
                "since": _times,
                "purpose": st.sampled_from(["halt", "restart", "delete"]),
                "asked": _names,
                "tried": _names,
            }
        ),
        "lastStop": st.fixed_dictionaries(
            {
                "method": st.sampled_from(["agent", "acpi", "destroy", "other"]),
                "seconds": st.floats(0, 1e6, allow_nan=False),
            }
        ),
        "restarting": st.just(True),
        "restartFor": _drift,
        "restartDidNotFix": _drift,
        "lastStart": _times,
        "lastFailure": _times,
        "quickFailures": st.integers(0, 1000),
        "guest": st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
        "guestReads": st.integers(0, 100),
        "onceGeneration": st.integers(1, 10**6),
    },
)


def _memory_keys(details: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in details.items() if k in KEYS}


@given(_shape)
def test_the_memory_round_trips_through_status_details(details: dict[str, Any]) -> None:
    assert DomainMemory.load(details).dump() == details


def test_what_the_version_before_wrote_round_trips_and_keeps_the_rest() -> None:
    for old in (OLD_STOPPING, OLD_CRASHED, OLD_GUEST):
        memory = DomainMemory.load(old)
        assert memory.dump() == _memory_keys(old)
        assert memory.into(old) == old  # state, reason, uuid stay as they were


def test_absent_keys_are_an_empty_memory() -> None:
    assert DomainMemory.load({}) == DomainMemory()
    assert DomainMemory.load({"state": "running", "uuid": "x"}).dump() == {}
    memory = DomainMemory.load(OLD_STOPPING)
    assert memory.stopping == Stop(
        datetime(2024, 1, 1, 0, 0, 2, tzinfo=UTC), "halt", ("acpi",), ("acpi",)
    )
    assert DomainMemory.load(OLD_CRASHED).crash == CrashLoop(
        datetime(2024, 1, 1, 0, 0, 5, tzinfo=UTC), datetime(2024, 1, 1, 0, 0, 7, tzinfo=UTC), 1
    )


def _at(h: Any, seconds: float) -> str:
    return (h.clock.wall() + timedelta(seconds=seconds)).isoformat()


def test_a_stop_in_progress_written_before_the_upgrade_is_carried_on(make: Any) -> None:  # noqa: F811
    h = make(set(), grace=30)  # the guest ignores every request
    name = h.prefix + "m"
    key = h.apply(name)
    h.reconcile(key)
    h.apply(name, runStrategy="Halted")
    status = h.store.get_status(key)
    stopping = {**OLD_STOPPING["stopping"], "since": _at(h, 0)}
    old = {**OLD_STOPPING, "stopping": stopping, "uuid": status.details["uuid"]}
    h.store.record(key, replace(status, details=old), (), datetime.now(UTC))

    wait = h.reconcile(key, after=10)
    assert h.guest.asked == []  # the power button was pressed already: not again
    assert h.state(name) == libvirt.VIR_DOMAIN_RUNNING
    assert wait is not None and 15 < wait <= 20  # the destroy is due at the stop's 30 s
    assert h.details(key)["stopping"]["since"] == stopping["since"]

    h.reconcile(key, after=21)
    assert h.state(name) == libvirt.VIR_DOMAIN_SHUTOFF
    details = h.details(key)
    assert details["lastStop"]["method"] == "destroy" and "stopping" not in details


def test_a_crash_loop_count_written_before_the_upgrade_is_kept(make: Any) -> None:  # noqa: F811
    h = make(set())
    name = h.prefix + "n"
    key = h.apply(name)
    h.reconcile(key)
    h.conn.lookupByName(name).destroy()
    status = h.store.get_status(key)
    old = {
        **OLD_CRASHED,
        "lastStart": _at(h, -2),
        "lastFailure": _at(h, 0),
        "uuid": status.details["uuid"],
    }
    h.store.record(key, replace(status, details=old), (), datetime.now(UTC))

    h.reconcile(key, after=0.5)  # the second quick failure waits 1 s from its sight
    assert h.state(name) == libvirt.VIR_DOMAIN_SHUTOFF
    ready = h.store.get_status(key).condition("Ready")
    assert ready.reason == "CrashLoopBackOff" and "2 times in a row" in ready.message

    h.reconcile(key, after=1)
    assert h.state(name) == libvirt.VIR_DOMAIN_RUNNING
    assert h.details(key)["quickFailures"] == 2
