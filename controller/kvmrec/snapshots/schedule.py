"""When snapshots are due: cron expressions, fixed intervals, and catching up after downtime.

A SnapshotPolicy sets exactly one of ``schedule`` (a cron expression) or ``every`` (a duration
such as ``"1h30m"``); :meth:`Schedule.of` turns them into a :class:`Schedule`.

Cron
    The five-field syntax of Vixie cron, the one ``crontab(5)`` documents: minute, hour,
    day-of-month, month, day-of-week, each ``*``, a number, a range ``a-b``, a step ``*/n`` or
    ``a-b/n``, or a comma-separated list of those. Months may be named ``jan``-``dec`` and days
    ``sun``-``sat`` (any case); day-of-week 0 and 7 are both Sunday. The macros ``@hourly``,
    ``@daily``/``@midnight``, ``@weekly``, ``@monthly`` and ``@yearly``/``@annually`` stand for
    their usual expansions (``@reboot`` is not a schedule and is refused). A lone number with a
    step (``5/10``) is refused as Vixie refuses it, rather than guessed at as some crons do.

    Day-of-month and day-of-week follow Vixie's odd but standard rule: when *both* are
    restricted, a day matches if *either* does (``0 0 1,15 * fri`` runs on the 1st, the 15th and
    every Friday); when either is unrestricted, both must match. "Unrestricted" is Vixie's
    test, the field *starts with* ``*``; so ``*/2`` counts as unrestricted and
    ``0 0 */2 * mon`` means "odd days that are Mondays", exactly as cron runs it.

    Times are matched on the wall-clock fields of the datetime given, in its timezone, and
    results carry that timezone with seconds zeroed. Daylight-saving transitions are out of
    scope: a wall time that a transition skips or repeats is treated like any other.

    :meth:`Cron.parse` refuses an expression that can never match (``0 0 30 2 *``, "February
    30th") with ``never matches``. Searches are still bounded, at
    :data:`SEARCH_HORIZON_YEARS` (41) years, so that a :class:`Cron` built by hand with
    impossible fields cannot loop forever. The bound is not arbitrary: it is the longest gap an
    expression that can match at all may have. The rarest day Vixie syntax can ask for is a
    29th of February that is also a given weekday (``0 0 29 2 */7``: ``*/7`` is Sunday, and
    its leading ``*`` makes the AND rule apply). Those gaps reach 40 years when they span a
    century year that is not leap, such as 2100: Sunday 29 February falls in 2088 and next in
    2128. Within the bound the search is exact; a plain ``0 0 29 2 *`` (8 years across 2100)
    is well inside it.

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

import calendar
import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise

__all__ = [
    "SEARCH_HORIZON_YEARS",
    "Cron",
    "Schedule",
    "ScheduleError",
    "parse_duration",
]

SEARCH_HORIZON_YEARS = 41
"""How many years :meth:`Cron.next_after` and :meth:`Cron.previous_at_or_before` search; the
module docstring explains why this covers every expression that can match at all."""

_INTERVAL_HINT_OCCURRENCES = 8


class ScheduleError(ValueError):
    """A schedule that cannot be used; the message names what is wrong."""


_MACROS: dict[str, str] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

_MONTH_NAMES = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
        start=1,
    )
}
_DAY_NAMES = {
    name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))
}


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] = field(default_factory=dict)


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTH_NAMES),
    # 7 is accepted as Sunday, as in Vixie; it is folded into 0 after parsing.
    _Field("day-of-week", 0, 7, _DAY_NAMES),
)

# The most days each month can have, February in a leap year included.
_MAX_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@dataclass(frozen=True)
class Cron:
    """A parsed five-field cron expression; build one with :meth:`parse`.

    The fields are the expanded sets of values (day-of-week 0-6, Sunday 0). ``dom_star`` and
    ``dow_star`` record whether the day fields started with ``*``, which selects between the
    AND and the OR rule for days (see the module docstring).
    """

    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]
    dom_star: bool
    dow_star: bool
    text: str = field(default="", compare=False)
    """The expression as written, for messages; two spellings of one schedule compare equal."""

    def __post_init__(self) -> None:
        for spec, values in zip(
            _FIELDS,
            (self.minutes, self.hours, self.days_of_month, self.months, self.days_of_week),
            strict=True,
        ):
            high = 6 if spec.name == "day-of-week" else spec.high
            if not values or not all(spec.low <= v <= high for v in values):
                raise ScheduleError(
                    f"{spec.name} values must be a non-empty set within {spec.low}-{high}"
                )

    @classmethod
    def parse(cls, text: str) -> Cron:
        """Parse a cron expression or macro; :class:`ScheduleError` says what is wrong."""
        source = text.strip()
        expanded = source
        if source.startswith("@"):
            macro = _MACROS.get(source.lower())
            if macro is None:
                known = ", ".join(_MACROS)
                raise ScheduleError(f"cron macro {source!r}: unknown (known: {known})")
            expanded = macro
        parts = expanded.split()
        if len(parts) != len(_FIELDS):
            raise ScheduleError(
                f"cron expression {source!r}: expected 5 fields "
                f"(minute hour day-of-month month day-of-week), got {len(parts)}"
            )
        sets = [_parse_field(spec, part) for spec, part in zip(_FIELDS, parts, strict=True)]
        dow = frozenset(0 if v == 7 else v for v in sets[4])
        cron = cls(
            minutes=sets[0],
            hours=sets[1],
            days_of_month=sets[2],
            months=sets[3],
            days_of_week=dow,
            dom_star=parts[2].startswith("*"),
            dow_star=parts[4].startswith("*"),
            text=source,
        )
        if not cron._can_match():
            raise ScheduleError(
                f"cron expression {source!r} never matches: "
                f"none of its months has any of its days of the month"
            )
        return cron

    def __str__(self) -> str:
        return self.text

    def next_after(self, after: datetime) -> datetime:
        """The first matching minute strictly after ``after``, in ``after``'s timezone.

        Raises :class:`ScheduleError` ("never matches") if there is none within
        :data:`SEARCH_HORIZON_YEARS`, which for a parsed expression cannot happen.
        """
        _require_aware(after, "after")
        t = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
        months, hours, minutes = sorted(self.months), sorted(self.hours), sorted(self.minutes)
        last_year = after.year + SEARCH_HORIZON_YEARS
        # Each step either returns or moves t forward to the start of the next unit (month,
        # day, hour, minute) that could match, so the loop runs a few times per candidate day
        # rather than once per minute.
        while t.year <= last_year:
            if t.month not in self.months:
                later = bisect_right(months, t.month)
                if later < len(months):
                    t = t.replace(month=months[later], day=1, hour=0, minute=0)
                else:
                    t = t.replace(year=t.year + 1, month=months[0], day=1, hour=0, minute=0)
            elif not self._day_matches(t.date()):
                t = t.replace(hour=0, minute=0) + timedelta(days=1)
            elif t.hour not in self.hours:
                later = bisect_right(hours, t.hour)
                if later < len(hours):
                    t = t.replace(hour=hours[later], minute=0)
                else:
                    t = t.replace(hour=0, minute=0) + timedelta(days=1)
            elif t.minute not in self.minutes:
                later = bisect_right(minutes, t.minute)
                if later < len(minutes):
                    t = t.replace(minute=minutes[later])
                else:
                    t = t.replace(minute=0) + timedelta(hours=1)
            else:
                return t
        raise ScheduleError(
            f"cron expression {self.text!r} never matches "
            f"(searched {SEARCH_HORIZON_YEARS} years after {after.isoformat()})"
        )

    def previous_at_or_before(self, at: datetime) -> datetime | None:
        """The latest matching minute at or before ``at``, or None within the look-back.

        The look-back is :data:`SEARCH_HORIZON_YEARS`, like :meth:`next_after`'s search. This
        answers "should a snapshot have been taken since the last one?".
        """
        _require_aware(at, "at")
        t = at.replace(second=0, microsecond=0)
        months, hours, minutes = sorted(self.months), sorted(self.hours), sorted(self.minutes)
        first_year = at.year - SEARCH_HORIZON_YEARS
        # The mirror image of next_after: step back to the *end* of the previous unit that
        # could match.
        while t.year >= first_year:
            if t.month not in self.months:
                earlier = bisect_left(months, t.month)
                year, month = (t.year, months[earlier - 1]) if earlier else (t.year - 1, months[-1])
                last_day = calendar.monthrange(year, month)[1]
                t = t.replace(year=year, month=month, day=last_day, hour=23, minute=59)
            elif not self._day_matches(t.date()):
                t = t.replace(hour=23, minute=59) - timedelta(days=1)
            elif t.hour not in self.hours:
                earlier = bisect_left(hours, t.hour)
                if earlier:
                    t = t.replace(hour=hours[earlier - 1], minute=59)
                else:
                    t = t.replace(hour=23, minute=59) - timedelta(days=1)
            elif t.minute not in self.minutes:
                earlier = bisect_left(minutes, t.minute)
                if earlier:
                    t = t.replace(minute=minutes[earlier - 1])
                else:
                    t = t.replace(minute=59) - timedelta(hours=1)
            else:
                return t
        return None

    def _day_matches(self, day: date) -> bool:
        dom = day.day in self.days_of_month
        dow = day.isoweekday() % 7 in self.days_of_week  # isoweekday: Monday 1 .. Sunday 7
        if self.dom_star or self.dow_star:
            return dom and dow
        return dom or dow

    def _can_match(self) -> bool:
        # Under the OR rule every allowed weekday occurs in every month. Under the AND rule a
        # (month, day) pair that exists in some year also falls on every weekday within the
        # 400-year Gregorian cycle, so existence of the pair is the whole condition.
        if not (self.dom_star or self.dow_star):
            return True
        return any(
            day <= _MAX_MONTH_DAYS[month - 1] for month in self.months for day in self.days_of_month
        )


def _parse_field(spec: _Field, text: str) -> frozenset[int]:
    values: set[int] = set()
    for element in text.split(","):
        if not element:
            raise ScheduleError(f"{spec.name} field {text!r}: empty list element")
        values.update(_parse_element(spec, text, element))
    return frozenset(values)


def _parse_element(spec: _Field, text: str, element: str) -> range:
    def fail(detail: str) -> ScheduleError:
        return ScheduleError(f"{spec.name} field {text!r}: {detail}")

    base, slash, step_text = element.partition("/")
    if base == "*":
        low, high = spec.low, spec.high
    elif "-" in base:
        first, _, last = base.partition("-")
        if not first or not last:
            raise fail(f"range {base!r} needs a value on each side of the '-'")
        low, high = _value(spec, text, first), _value(spec, text, last)
        if low > high:
            # Vixie does not wrap ranges around; 'fri-sun' is the likely case, and 7 is Sunday.
            hint = ", Sunday is also 7" if spec.name == "day-of-week" else ""
            raise fail(f"range {base!r} runs backwards{hint}")
    else:
        if slash:
            # Vixie accepts a step only after '*' or a range; cronie reads '5/10' as '5-max/10'
            # and others as '5'. Refusing is the only reading nobody is surprised by later.
            raise fail(f"step {element!r} needs a range or '*' before the '/', like '*/10'")
        value = _value(spec, text, base)
        return range(value, value + 1)
    step = 1
    if slash:
        if not step_text.isascii() or not step_text.isdigit():
            raise fail(f"step {step_text!r} is not a whole number")
        step = int(step_text)
        if step == 0:
            raise fail("step 0 must be at least 1")
    return range(low, high + 1, step)


def _value(spec: _Field, text: str, token: str) -> int:
    where = f"{spec.name} field {text!r}"
    named = spec.names.get(token.lower())
    if named is not None:
        return named
    if not token.isascii() or not token.isdigit():
        kind = "a number or a name" if spec.names else "a number"
        what = "" if token == text else f"{token!r} "
        raise ScheduleError(f"{where}: {what}is not {kind}")
    value = int(token)
    if not spec.low <= value <= spec.high:
        what = "" if token == text else f"{token!r} "
        raise ScheduleError(f"{where}: {what}out of range {spec.low}-{spec.high}")
    return value


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
        _require_aware(now, "now")
        if last is None and self.every is None and since is not None:
            # The first cron snapshot counts from the policy's start as if it were a snapshot.
            _require_aware(since, "since")
            last = since
        elif last is not None:
            _require_aware(last, "last")
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


def _require_aware(value: datetime, name: str) -> None:
    # A naive datetime would be silently read in the host's zone here and then fail to compare
    # with the aware ones everywhere else; refuse it where the mistake is made.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")
