"""Shared fixtures for the engine tests: fake time, and waiting for other threads.

Most engine behaviour is asserted on a ``FakeClock``, so backoffs and requeue delays of
minutes cost no real time. Where a worker thread has to get somewhere first, ``eventually``
waits for it with a generous real-time bound: the bound only matters when a test is failing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from kvmrec.engine import clock as clocks

Eventually = Callable[[Callable[[], bool]], None]


@pytest.fixture
def clock() -> clocks.FakeClock:
    return clocks.FakeClock()


@pytest.fixture
def eventually() -> Eventually:
    def wait(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
        give_up = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > give_up:
                pytest.fail(f"condition not reached within {timeout} s: {predicate}")
            time.sleep(0.001)

    return wait
