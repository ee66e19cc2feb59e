"""The crash-loop policy alone: what counts as a quick failure, the waits, the reset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kvmrec.reconcilers import crash_loop

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_the_wait_grows_as_a_square_up_to_the_cap_and_counts_from_the_stop() -> None:
    details: dict[str, Any] = {}
    crash_loop.note_start(details, at(0))
    now, waits = 0.0, []
    for _ in range(20):
        now += 5  # each run lasts five seconds
        wait = crash_loop.wait(details, at(now))
        waits.append(wait.seconds if wait else None)
        if wait is not None:
            crash_loop.note_failure(details, at(now))
            later = crash_loop.wait(details, at(now + wait.seconds / 2))
            assert later == crash_loop.Wait(wait.seconds / 2, wait.failures)
            now += wait.seconds
        crash_loop.note_start(details, at(now))
    assert waits[:6] == [None, 1.0, 4.0, 9.0, 16.0, 25.0]
    assert waits[17:] == [289.0, 300.0, 300.0]


def test_a_guest_that_ran_a_minute_starts_the_count_again() -> None:
    details: dict[str, Any] = {"lastStart": at(0).isoformat(), "quickFailures": 5}
    assert crash_loop.wait(details, at(60)) is None
    crash_loop.note_start(details, at(60))
    assert details["quickFailures"] == 0


def test_a_power_off_by_kvmrec_itself_is_no_failure() -> None:
    details: dict[str, Any] = {"lastStart": at(0).isoformat(), "quickFailures": 3}
    details["restarting"] = True
    assert crash_loop.wait(details, at(1)) is None
    crash_loop.note_start(details, at(1))
    assert details["quickFailures"] == 0
