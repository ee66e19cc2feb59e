"""When snapshots are due: cron expressions, fixed intervals, and catching up after downtime.

A SnapshotPolicy sets exactly one of ``schedule`` (a cron expression) or ``every`` (a duration
such as ``"1h30m"``); :meth:`Schedule.of` turns them into a :class:`Schedule`.

Cron
    Five-field Vixie cron, matched through daylight-saving changes as Debian cron does;
    :mod:`kvmrec.snapshots.cron` parses and matches it.

Intervals
    :func:`parse_duration` reads ``"90s"``, ``"15m"``, ``"1h30m"``, ``"1d12h"``, ``"1w"``: whole
    numbers with the units w, d, h, m, s, largest first, each at most once, at least a second.

Catching up: one snapshot, not a burst
    :meth:`Schedule.next_due` is sanoid's discipline. Given the time of the newest snapshot
    (``last``) and ``now`` it returns when the next snapshot is due; a value ``<= now`` means
    "take one now". After downtime, the next occurrence after ``last`` is long past, so the
    answer is "now", and once that snapshot is taken ``last`` becomes now and the answer after
    it is the next *future* occurrence. However many occurrences were missed, the controller
    takes exactly one catch-up snapshot, which retention then files under the period it falls
    in. A burst of identical snapshots a second apart would only be pruned again.

    A policy with no snapshot yet (``last is None``) has nothing to measure from, and a
    stateless answer of "the next occurrence after now" would never become due: at every
    check the next occurrence is, by definition, still ahead. So the caller may pass ``since``,
    the time the policy began to apply (when the controller first saw it). With ``every`` the
    first snapshot is due at once (an interval has no phase to respect). With cron it is due
    at the first occurrence after ``since`` (the operator chose the times of day: a policy
    created at 14:05 with ``@daily`` takes its first snapshot at midnight, not at 14:05).
    Without ``since`` the first cron snapshot is due at once too, which is sanoid's answer
    to "no snapshot exists for this period" and never leaves a domain without a snapshot.

    A ``last`` later than ``now`` (the host clock stepped back, or a snapshot time from a host
    whose clock is ahead) is treated as ``now``, so a wrong timestamp cannot postpone
    snapshots by more than one interval. ``since`` gets the same treatment.

:meth:`Schedule.interval_hint` is the "normal" spacing of snapshots, for the Degraded condition
("the newest snapshot is older than twice the interval"); see its docstring.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from kvmrec.snapshots.cron import (
    SEARCH_HORIZON_YEARS,
    Cron,
    ScheduleError,
    local_zone,
    require_aware,
)

__all__ = [
    "SEARCH_HORIZON_YEARS",
    "Cron",
    "Schedule",
    "ScheduleError",
    "local_zone",
    "parse_duration",
]

_INTERVAL_HINT_OCCURRENCES = 8


_DURATION_UNITS = {
    "w": timedelta(weeks=1),
    "d": timedelta(days=1),
    "h": timedelta(hours=1),
    "m": timedelta(minutes=1),
    "s": timedelta(seconds=1),
}
# Units largest first, each at most once: "1h30m" reads one way only, "30m1h" is a typo.
_DURATION = re.compile(r"(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?")


def parse_duration(text: str) -> timedelta:
    """A duration like ``"90s"``, ``"1h30m"`` or ``"1d12h"``; at least one second."""
    source = text.strip()
    match = _DURATION.fullmatch(source)
    if not source or match is None:
        raise ScheduleError(
            f"duration {text!r}: expected whole numbers with units w, d, h, m, s, "
            f"largest first, like '90s', '1h30m' or '1d12h'"
        )
    total = timedelta()
    for amount, unit in zip(match.groups(), _DURATION_UNITS.values(), strict=True):
        if amount is not None:
            total += int(amount) * unit
    if total < timedelta(seconds=1):
        raise ScheduleError(f"duration {text!r}: must be at least 1s")
    return total


@dataclass(frozen=True)
class Schedule:
    """When a policy snapshots: exactly one of a cron expression and a fixed interval."""

    cron: Cron | None = None
    every: timedelta | None = None

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every is None):
            raise ScheduleError("exactly one of schedule and every must be set")
        if self.every is not None and self.every < timedelta(seconds=1):
            raise ScheduleError(f"every {self.every}: must be at least 1s")

    @classmethod
    def of(cls, *, schedule: str | None, every: str | None) -> Schedule:
        """A schedule from a policy's ``schedule`` (cron) and ``every`` (duration) fields."""
        if (schedule is None) == (every is None):
            raise ScheduleError("exactly one of schedule and every must be set")
        if schedule is not None:
            return cls(cron=Cron.parse(schedule))
        assert every is not None
        return cls(every=parse_duration(every))

    def next_due(
        self, last: datetime | None, now: datetime, *, since: datetime | None = None
    ) -> datetime:
        """When the next snapshot is due; ``<= now`` means take one now.

        ``last`` is the time of the newest snapshot, None if there is none; ``since``, used
        only when there is none, is when the policy began to apply (see the module docstring
        for both, and for why a missed schedule yields one catch-up snapshot). Cron
        occurrences are computed in ``now``'s timezone (``last`` and ``since`` are converted
        to it), so the caller picks the zone the expression is read in by the ``now`` it
        passes.
        """
        require_aware(now, "now")
        if last is None and self.every is None and since is not None:
            # The first cron snapshot counts from the policy's start as if it were a snapshot.
            require_aware(since, "since")
            last = since
        elif last is not None:
            require_aware(last, "last")
        if last is None:
            return now
        last = min(last, now)
        if self.every is not None:
            return max(last + self.every, now)
        assert self.cron is not None
        return max(self.cron.next_after(last.astimezone(now.tzinfo)), now)

    def interval_hint(self, now: datetime | None = None) -> timedelta:
        """The usual spacing between snapshots, for "is the newest snapshot too old?".

        For ``every``, the interval itself. For cron, the largest gap between consecutive
        occurrences among the next eight after ``now`` (default: the current UTC time). The
        largest, not the average, so that a regular but uneven schedule is not reported late
        at its normal long gap: ``0 0 * * mon-fri`` gives three days (Friday to Monday, and any
        eight weekdays in a row span a weekend), ``@monthly`` gives 31 days.
        """
        if self.every is not None:
            return self.every
        assert self.cron is not None
        occurrences = [self.cron.next_after(datetime.now(UTC) if now is None else now)]
        while len(occurrences) < _INTERVAL_HINT_OCCURRENCES:
            occurrences.append(self.cron.next_after(occurrences[-1]))
        return max(b - a for a, b in pairwise(occurrences))
