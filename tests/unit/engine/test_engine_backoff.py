"""Backoff: exponential per key, capped, jittered within bounds, reset by forget."""

from __future__ import annotations

import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvmrec.engine import backoff as backoffs


def test_delays_double_from_base_up_to_the_cap() -> None:
    b: backoffs.Backoff[str] = backoffs.Backoff(
        backoffs.BackoffSettings(base=1.0, cap=10.0, factor=2.0, jitter=0.0)
    )

    delays = [b.next_delay("vm-a") for _ in range(7)]

    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert b.failures("vm-a") == 7


def test_default_settings_reach_the_cap_after_nine_failures() -> None:
    # The defaults' documented story: 1, 2, 4, ... 256, then 300 s.
    b: backoffs.Backoff[str] = backoffs.Backoff(backoffs.BackoffSettings(jitter=0.0))
    delays = [b.next_delay("vm-a") for _ in range(11)]
    assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]


def test_forget_resets_to_base() -> None:
    b: backoffs.Backoff[str] = backoffs.Backoff(backoffs.BackoffSettings(jitter=0.0))
    for _ in range(5):
        b.next_delay("vm-a")

    b.forget("vm-a")

    assert b.failures("vm-a") == 0
    assert b.next_delay("vm-a") == 1.0


def test_forget_of_an_unknown_key_is_harmless() -> None:
    b: backoffs.Backoff[str] = backoffs.Backoff()
    b.forget("never-failed")
    assert b.failures("never-failed") == 0


def test_keys_back_off_independently() -> None:
    b: backoffs.Backoff[str] = backoffs.Backoff(backoffs.BackoffSettings(jitter=0.0))
    for _ in range(4):
        b.next_delay("vm-a")

    assert b.next_delay("vm-b") == 1.0
    assert b.failures("vm-a") == 4
    assert b.failures("vm-b") == 1


def test_jitter_stays_within_bounds_and_actually_varies() -> None:
    s = backoffs.BackoffSettings(base=1.0, cap=8.0, factor=2.0, jitter=0.2)
    b: backoffs.Backoff[int] = backoffs.Backoff(s, rng=random.Random(42))

    # 200 keys, each failing six times: exponents 0..5, the last two capped.
    rows = [[b.next_delay(key) for _ in range(6)] for key in range(200)]

    for n, unjittered in enumerate([1.0, 2.0, 4.0, 8.0, 8.0, 8.0]):
        column = [row[n] for row in rows]
        assert min(column) >= unjittered * 0.8
        assert max(column) <= unjittered * 1.2
        # Spread, not a constant: jitter is really applied, and fills most of its range.
        assert max(column) - min(column) > unjittered * 0.3
    assert max(max(row) for row in rows) <= s.cap * (1 + s.jitter)


def test_seeded_rng_makes_jitter_reproducible() -> None:
    def delays(seed: int) -> list[float]:
        b: backoffs.Backoff[str] = backoffs.Backoff(rng=random.Random(seed))
        return [b.next_delay("vm-a") for _ in range(12)]

    assert delays(7) == delays(7)
    assert delays(7) != delays(8)


def test_thousands_of_failures_stay_at_the_cap() -> None:
    # factor**n overflows a float near n=1024; the backoff must not.
    b: backoffs.Backoff[str] = backoffs.Backoff(backoffs.BackoffSettings(jitter=0.0))
    for _ in range(2000):
        delay = b.next_delay("vm-a")
    assert delay == 300.0


@settings(max_examples=200, deadline=None, database=None)
@given(
    base=st.floats(0.001, 10),
    extra=st.floats(0, 1000),
    factor=st.floats(1, 4),
    jitter=st.floats(0, 0.99),
    failures=st.integers(0, 60),
    seed=st.integers(0, 2**32),
)
def test_any_delay_is_positive_and_within_the_jittered_cap(
    base: float, extra: float, factor: float, jitter: float, failures: int, seed: int
) -> None:
    s = backoffs.BackoffSettings(base=base, cap=base + extra, factor=factor, jitter=jitter)
    b: backoffs.Backoff[str] = backoffs.Backoff(s, rng=random.Random(seed))
    for _ in range(failures):
        b.next_delay("k")

    delay = b.next_delay("k")

    unjittered = min(base * factor**failures, s.cap)
    slack = 1e-9  # random.uniform may round one ulp past its bound
    assert delay > 0
    assert (
        unjittered * (1 - jitter) * (1 - slack) <= delay <= unjittered * (1 + jitter) * (1 + slack)
    )
    assert delay <= s.cap * (1 + jitter) * (1 + slack)


def test_concurrent_failures_are_all_counted() -> None:
    b: backoffs.Backoff[str] = backoffs.Backoff()

    def fail_many() -> None:
        for _ in range(500):
            b.next_delay("vm-a")

    threads = [threading.Thread(target=fail_many) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert b.failures("vm-a") == 8 * 500


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"base": 0.0}, id="zero-base"),
        pytest.param({"base": 5.0, "cap": 1.0}, id="cap-below-base"),
        pytest.param({"factor": 0.5}, id="shrinking-factor"),
        pytest.param({"jitter": 1.0}, id="jitter-could-reach-zero"),
        pytest.param({"jitter": -0.1}, id="negative-jitter"),
    ],
)
def test_invalid_settings_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        backoffs.BackoffSettings(**kwargs)
