"""Clocks: the fake one moves only when told and wakes its waiters; the real one is UTC."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from freezegun import freeze_time

from kvmrec.engine import clock as clocks


def test_fake_clock_moves_both_readings_together() -> None:
    start = datetime(2024, 3, 1, 12, tzinfo=UTC)
    clock = clocks.FakeClock(monotonic=50.0, wall=start)

    clock.advance(90.5)

    assert clock.monotonic() == 140.5
    assert clock.wall() == start + timedelta(seconds=90.5)


def test_fake_clock_normalises_wall_time_to_utc() -> None:
    cet = timezone(timedelta(hours=1))
    clock = clocks.FakeClock(wall=datetime(2024, 3, 1, 13, tzinfo=cet))

    assert clock.wall().tzinfo is UTC
    assert clock.wall() == datetime(2024, 3, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: clocks.FakeClock(wall=datetime(2024, 1, 1)), id="naive-wall"),
        pytest.param(lambda: clocks.FakeClock().advance(-1), id="backwards"),
    ],
)
def test_fake_clock_rejects(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        make()


def test_fake_clock_waiter_sleeps_until_advanced_past_its_deadline() -> None:
    clock = clocks.FakeClock()
    cond = threading.Condition()
    deadline = clock.monotonic() + 10
    woke_at: list[float] = []

    def waiter() -> None:
        with cond:
            # wait_until may return spuriously (every advance wakes everyone), so loop.
            while clock.monotonic() < deadline:
                clock.wait_until(cond, deadline)
        woke_at.append(clock.monotonic())

    thread = threading.Thread(target=waiter)
    thread.start()
    clock.advance(5)
    thread.join(0.05)
    assert thread.is_alive(), "woke up before its deadline"

    clock.advance(5)
    thread.join(2)
    assert not thread.is_alive()
    assert woke_at == [deadline]


def test_fake_clock_wait_until_a_past_deadline_returns_at_once() -> None:
    clock = clocks.FakeClock()
    cond = threading.Condition()
    with cond:
        clock.wait_until(cond, clock.monotonic())  # would block forever if it waited


def test_system_clock_waits_for_a_real_deadline() -> None:
    clock = clocks.SystemClock()
    cond = threading.Condition()
    start = clock.monotonic()
    with cond:
        clock.wait_until(cond, start + 0.02)
    elapsed = clock.monotonic() - start
    assert 0.015 <= elapsed < 1.0


def test_system_clock_past_deadline_does_not_block() -> None:
    clock = clocks.SystemClock()
    cond = threading.Condition()
    start = time.monotonic()
    with cond:
        clock.wait_until(cond, clock.monotonic() - 1)
    assert time.monotonic() - start < 0.5


@freeze_time("2024-05-01T12:34:56Z")
def test_system_clock_wall_is_aware_utc() -> None:
    now = clocks.SystemClock().wall()
    assert now == datetime(2024, 5, 1, 12, 34, 56, tzinfo=UTC)
    assert now.utcoffset() == timedelta(0)
