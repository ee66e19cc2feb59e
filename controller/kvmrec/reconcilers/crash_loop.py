"""Crash-loop backoff: how long a guest that keeps stopping waits before its next start.

A failure is a guest that stops, for any reason kvmrec did not cause (destroyed by hand,
crashed, shut down from inside where the runStrategy wants it running), less than
``WINDOW`` seconds after kvmrec started it. The first such failure is healed at once, as any
stop is; the n-th in a row waits (n-1)² seconds (1, 4, 9, 16, ... up to ``CAP``) before the
next start, counted from the moment kvmrec noticed the stop. A guest that ran for
``WINDOW`` seconds or more before it stopped did not fail quickly: it is started again at
once and the count starts over.

The state is the Domain's memory (reconcilers/domain_memory.py, stored in its status
details), so it survives a restart of the service: ``lastStart`` (when kvmrec last started
the guest), ``lastFailure`` (when it noticed the guest stopped after that start) and
``quickFailures`` (the quick failures in a row before the current one).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from kvmrec.reconcilers.domain_memory import CrashLoop, DomainMemory

WINDOW = 60.0
"""A guest that stops within a minute of its start has failed quickly; one that ran longer
proved whatever was wrong went away, and its next failure starts the count again."""

CAP = 300.0
"""The longest wait: five minutes, the default resync period."""


@dataclass(frozen=True)
class Wait:
    """Why and how long the next start waits."""

    seconds: float  # from now
    failures: int  # quick failures in a row, the current one included

    @property
    def message(self) -> str:
        times = f"{self.failures} times in a row"
        return (
            f"the guest stopped {times} within {WINDOW:.0f} s of its start; "
            f"next start in {self.seconds:.0f} s (after the first such stop the wait grows "
            f"1, 4, 9, 16 s ... up to {CAP:.0f} s; it resets once the guest has run "
            f"for {WINDOW:.0f} s)"
        )


def _failure_time(crash: CrashLoop, now: datetime) -> datetime:
    """When the current stop was noticed: recorded on the first visit after it, else now."""
    start, failure = crash.last_start, crash.last_failure
    if failure is not None and start is not None and failure >= start:
        return failure
    return now


def wait(memory: DomainMemory, now: datetime) -> Wait | None:
    """How long a stopped guest waits before kvmrec starts it again; None: start it now."""
    crash = memory.crash
    start = crash.last_start
    if start is None or memory.restarting:
        return None  # never started by kvmrec, or powered off by kvmrec itself
    failed = _failure_time(crash, now)
    if (failed - start).total_seconds() >= WINDOW:
        return None
    failures = crash.failures + 1
    gap = min(float((failures - 1) ** 2), CAP)
    left = gap - (now - failed).total_seconds()
    return Wait(left, failures) if left > 0 else None


def note_failure(memory: DomainMemory, now: datetime) -> DomainMemory:
    """Remember when the current stop was first noticed, so that the wait counts from it."""
    crash = replace(memory.crash, last_failure=_failure_time(memory.crash, now))
    return replace(memory, crash=crash)


def note_start(memory: DomainMemory, now: datetime) -> DomainMemory:
    """Count the stop this start follows, if it was a quick failure, and remember the start."""
    crash = memory.crash
    start = crash.last_start
    quick = (
        start is not None
        and not memory.restarting  # kvmrec powered it off to apply a change
        and (_failure_time(crash, now) - start).total_seconds() < WINDOW
    )
    failures = crash.failures + 1 if quick else 0
    return replace(memory, crash=CrashLoop(now, None, failures))
