"""Cron expressions: Vixie's five fields, parsed and worded by kvmrec, matched by cronsim.

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
results carry that timezone with seconds zeroed. Matching is cronsim's, which follows
Debian cron through daylight-saving changes: a fixed time that a change skips (02:30 on
a spring-forward night) runs once at the first minute after the gap, one that it repeats
runs once, at its first occurrence; a field that starts with ``*`` runs in every real
minute it names. The controller reads schedules in the host's zone (:func:`local_zone`),
a real IANA zone where the host has one, so ``0 2 * * *`` takes one snapshot a night all
year. kvmrec's own parser stays in front of cronsim: it speaks Vixie's five fields and
nothing more (no seconds, ``L``, ``W`` or ``#``), and words every refusal.

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
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

__all__ = ["SEARCH_HORIZON_YEARS", "Cron", "ScheduleError", "local_zone", "require_aware"]

SEARCH_HORIZON_YEARS = 41
"""How many years :meth:`Cron.next_after` and :meth:`Cron.previous_at_or_before` search; the
module docstring explains why this covers every expression that can match at all."""


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
    high_is_low: bool = False
    """Day-of-week: 7 is another name for 0 (Sunday)."""

    @property
    def size(self) -> int:
        """How many distinct values the field can take."""
        return self.high - self.low + (0 if self.high_is_low else 1)


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTH_NAMES),
    # 7 is accepted as Sunday, as in Vixie; it is folded into 0 after parsing.
    _Field("day-of-week", 0, 7, _DAY_NAMES, high_is_low=True),
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
        require_aware(after, "after")
        found = self._first(after.replace(second=0, microsecond=0), reverse=False)
        if found is None or found.year > after.year + SEARCH_HORIZON_YEARS:
            raise ScheduleError(
                f"cron expression {self.text!r} never matches "
                f"(searched {SEARCH_HORIZON_YEARS} years after {after.isoformat()})"
            )
        return found

    def previous_at_or_before(self, at: datetime) -> datetime | None:
        """The latest matching minute at or before ``at``, or None within the look-back.

        The look-back is :data:`SEARCH_HORIZON_YEARS`, like :meth:`next_after`'s search. This
        answers "should a snapshot have been taken since the last one?".
        """
        require_aware(at, "at")
        # cronsim steps back strictly before the start; one second past the minute makes
        # the minute itself the first candidate.
        start = at.replace(second=0, microsecond=0) + timedelta(seconds=1)
        found = self._first(start, reverse=True)
        if found is None or found.year < at.year - SEARCH_HORIZON_YEARS:
            return None
        return found

    def _first(self, start: datetime, *, reverse: bool) -> datetime | None:
        try:
            occurrences = CronSim(self._expression(), start, reverse=reverse)
        except CronSimError:
            return None  # cronsim refuses a day that no month of the expression has
        # The day rule is this object's, not the one cronsim infers from the text: a Cron
        # built field by field has no text to infer it from.
        occurrences.day_and = self.dom_star or self.dow_star
        return next(occurrences)

    def _expression(self) -> str:
        # The expression as written (macros expanded) keeps what cronsim reads from its
        # spelling: a minute or hour field starting with '*' is run in every repeated or
        # skipped wall-clock hour of a DST change, a fixed time exactly once (Debian cron's
        # rule). A Cron built field by field is spelled from its sets.
        written = _MACROS.get(self.text.strip().lower(), self.text).split()
        if len(written) == len(_FIELDS):
            return " ".join(written)
        sets = (self.minutes, self.hours, self.days_of_month, self.months, self.days_of_week)
        return " ".join(
            "*" if len(values) == spec.size else ",".join(str(v) for v in sorted(values))
            for spec, values in zip(_FIELDS, sets, strict=True)
        )

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


def local_zone() -> tzinfo:
    """The host's time zone, as a zone with its daylight-saving rules where the host has one.

    ``$TZ`` first (as the C library reads it), then ``/etc/localtime``; only a host with
    neither readable gets its current UTC offset, which knows no DST changes.
    """
    name = os.environ.get("TZ", "").removeprefix(":")
    try:
        if name:
            return ZoneInfo(name)
        with open("/etc/localtime", "rb") as data:
            return ZoneInfo.from_file(data, key="localtime")
    except (OSError, ValueError, ZoneInfoNotFoundError):
        offset = datetime.now().astimezone().tzinfo
        assert offset is not None
        return offset


def require_aware(value: datetime, name: str) -> None:
    # A naive datetime would be silently read in the host's zone here and then fail to compare
    # with the aware ones everywhere else; refuse it where the mistake is made.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")
