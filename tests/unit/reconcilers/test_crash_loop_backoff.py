"""The crash-loop policy alone: what counts as a quick failure, the waits, the reset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kvmrec.reconcilers import crash_loop
from kvmrec.reconcilers.domain_memory import DomainMemory

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_the_wait_grows_as_a_square_up_to_the_cap_and_counts_from_the_stop() -> None:
    memory = crash_loop.note_start(DomainMemory(), at(0))
    now, waits = 0.0, []
    for _ in range(20):
        now += 5  # each run lasts five seconds
        wait = crash_loop.wait(memory, at(now))
        waits.append(wait.seconds if wait else None)
        if wait is not None:
            memory = crash_loop.note_failure(memory, at(now))
            later = crash_loop.wait(memory, at(now + wait.seconds / 2))
            assert later == crash_loop.Wait(wait.seconds / 2, wait.failures)
            now += wait.seconds
        memory = crash_loop.note_start(memory, at(now))
    assert waits[:6] == [None, 1.0, 4.0, 9.0, 16.0, 25.0]
    assert waits[17:] == [289.0, 300.0, 300.0]


def test_a_guest_that_ran_a_minute_starts_the_count_again() -> None:
    memory = DomainMemory.load({"lastStart": at(0).isoformat(), "quickFailures": 5})
    assert crash_loop.wait(memory, at(60)) is None
    memory = crash_loop.note_start(memory, at(60))
    assert memory.dump()["quickFailures"] == 0


def test_a_power_off_by_kvmrec_itself_is_no_failure() -> None:
    details = {"lastStart": at(0).isoformat(), "quickFailures": 3}
    memory = DomainMemory.load({**details, "restarting": True})
    assert crash_loop.wait(memory, at(1)) is None
    memory = crash_loop.note_start(memory, at(1))
    assert memory.dump()["quickFailures"] == 0
