"""Schedules: cron parsing and matching, durations, and the one-catch-up-snapshot rule.

Times are UTC, except one test with a fixed-offset zone and the daylight-saving cases at
the end, in Europe/Berlin. Where "now"
comes from the clock (the controller loop, ``interval_hint``'s default) freezegun freezes it.
Calendar facts used below: 2024-06-01 is a Saturday, so June 2024's Fridays are the 7th, 14th,
21st and 28th and July's the 5th, 12th, 19th and 26th.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from freezegun import freeze_time
from hypothesis import given
from hypothesis import strategies as st

from kvmrec.snapshots.schedule import (
    SEARCH_HORIZON_YEARS,
    Cron,
    Schedule,
    ScheduleError,
    local_zone,
    parse_duration,
)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def occurrences(expression: str, after: str, count: int) -> list[str]:
    cron, t, found = Cron.parse(expression), at(after), []
    for _ in range(count):
        t = cron.next_after(t)
        found.append(t.strftime("%Y-%m-%d %H:%M"))
    return found


# --- parsing -------------------------------------------------------------------------------

ALL_MINUTES = frozenset(range(60))


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("*", ALL_MINUTES),
        ("7", {7}),
        ("0,15,45", {0, 15, 45}),
        ("10-13", {10, 11, 12, 13}),
        ("*/15", {0, 15, 30, 45}),
        ("10-30/10", {10, 20, 30}),
        ("1-5,50-59/3,30", {1, 2, 3, 4, 5, 30, 50, 53, 56, 59}),
        ("*/60", {0}),  # a step wider than the range leaves just its start
    ],
)
def test_minute_field_syntax(field: str, expected: set[int]) -> None:
    assert Cron.parse(f"{field} * * * *").minutes == expected


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("jan", {1}),
        ("JAN,Dec", {1, 12}),
        ("mar-may", {3, 4, 5}),
        ("feb-dec/2", {2, 4, 6, 8, 10, 12}),
        ("*/3", {1, 4, 7, 10}),  # months start at 1
        ("6-aug", {6, 7, 8}),  # names and numbers mix in a range
    ],
)
def test_month_field_syntax(field: str, expected: set[int]) -> None:
    assert Cron.parse(f"0 0 1 {field} *").months == expected


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("0", {0}),
        ("7", {0}),  # 7 is Sunday too
        ("sun", {0}),
        ("Sat", {6}),
        ("mon-fri", {1, 2, 3, 4, 5}),
        ("5-7", {5, 6, 0}),  # Friday to Sunday, spelled with 7
        ("*/2", {0, 2, 4, 6}),
        ("*/7", {0}),  # 0 and 7, both Sunday
    ],
)
def test_day_of_week_field_syntax(field: str, expected: set[int]) -> None:
    assert Cron.parse(f"0 0 * * {field}").days_of_week == expected


def test_day_of_month_and_hour_ranges() -> None:
    cron = Cron.parse("0 */6 1,15-16,31 * *")
    assert cron.hours == {0, 6, 12, 18}
    assert cron.days_of_month == {1, 15, 16, 31}


@pytest.mark.parametrize(
    ("macro", "expansion"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@Daily", "0 0 * * *"),
    ],
)
def test_macros(macro: str, expansion: str) -> None:
    cron = Cron.parse(macro)
    assert cron == Cron.parse(expansion)  # equality ignores the spelling...
    assert str(cron) == macro  # ...which is kept for messages


def test_whitespace_around_and_between_fields_is_ignored() -> None:
    assert Cron.parse("  0\t0  * *   *  ") == Cron.parse("0 0 * * *")


def test_star_flags_follow_vixie_first_character_rule() -> None:
    both = Cron.parse("0 0 1 * mon")
    assert (both.dom_star, both.dow_star) == (False, False)
    stepped = Cron.parse("0 0 */2 * mon")
    assert (stepped.dom_star, stepped.dow_star) == (True, False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("61 * * * *", "minute field '61': out of range 0-59"),
        ("1,61 * * * *", "minute field '1,61': '61' out of range 0-59"),
        ("* 24 * * *", "hour field '24': out of range 0-23"),
        ("* * 0 * *", "day-of-month field '0': out of range 1-31"),
        ("* * 32 * *", "day-of-month field '32': out of range 1-31"),
        ("* * * 13 *", "month field '13': out of range 1-12"),
        ("* * * * 8", "day-of-week field '8': out of range 0-7"),
        ("* * * foo *", "month field 'foo': is not a number or a name"),
        ("* * * * monday", "day-of-week field 'monday': is not a number or a name"),
        ("mon * * * *", "minute field 'mon': is not a number"),
        ("x-5 * * * *", "minute field 'x-5': 'x' is not a number"),
        ("1,,2 * * * *", "minute field '1,,2': empty list element"),
        ("-5 * * * *", "minute field '-5': range '-5' needs a value on each side of the '-'"),
        ("5- * * * *", "minute field '5-': range '5-' needs a value on each side of the '-'"),
        ("30-10 * * * *", "minute field '30-10': range '30-10' runs backwards"),
        (
            "0 0 * * fri-sun",
            "day-of-week field 'fri-sun': range 'fri-sun' runs backwards, Sunday is also 7",
        ),
        ("*/0 * * * *", "minute field '*/0': step 0 must be at least 1"),
        ("*/x * * * *", "minute field '*/x': step 'x' is not a whole number"),
        ("*/ * * * *", "minute field '*/': step '' is not a whole number"),
        (
            "5/10 * * * *",
            "minute field '5/10': step '5/10' needs a range or '*' before the '/', like '*/10'",
        ),
        (
            "* * * *",
            "cron expression '* * * *': expected 5 fields "
            "(minute hour day-of-month month day-of-week), got 4",
        ),
        (
            "0 0 * * * /bin/true",
            "cron expression '0 0 * * * /bin/true': expected 5 fields "
            "(minute hour day-of-month month day-of-week), got 6",
        ),
        (
            "",
            "cron expression '': expected 5 fields "
            "(minute hour day-of-month month day-of-week), got 0",
        ),
        (
            "@reboot",
            "cron macro '@reboot': unknown "
            "(known: @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually)",
        ),
        (
            "0 0 30 2 *",
            "cron expression '0 0 30 2 *' never matches: "
            "none of its months has any of its days of the month",
        ),
        (
            "0 0 31 4,6,9,11 *",
            "cron expression '0 0 31 4,6,9,11 *' never matches: "
            "none of its months has any of its days of the month",
        ),
    ],
)
def test_parse_errors_name_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        Cron.parse(text)
    assert str(caught.value) == message


def test_february_30th_under_the_or_rule_still_matches_on_the_weekday() -> None:
    # Both day fields restricted: "the 30th, or any Monday", and February has Mondays.
    assert occurrences("0 0 30 2 mon", "2024-01-01", 2) == ["2024-02-05 00:00", "2024-02-12 00:00"]


# --- next_after ----------------------------------------------------------------------------


def test_next_after_is_strictly_after_and_zeroes_seconds() -> None:
    hourly = Cron.parse("0 * * * *")
    assert hourly.next_after(at("2024-06-01 10:00:00")) == at("2024-06-01 11:00")
    assert hourly.next_after(at("2024-06-01 09:59:30.5")) == at("2024-06-01 10:00")
    every_minute = Cron.parse("* * * * *")
    assert every_minute.next_after(at("2024-06-01 10:00:59.999")) == at("2024-06-01 10:01")


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("*/15 * * * *", "2024-06-01 10:50", "2024-06-01 11:00"),  # hour boundary
        ("0 0 * * *", "2024-06-01 23:59", "2024-06-02 00:00"),  # day boundary
        ("0 0 1 * *", "2024-01-31 12:00", "2024-02-01 00:00"),  # month boundary
        ("0 0 1 1 *", "2024-06-01 00:00", "2025-01-01 00:00"),  # year boundary
        ("59 23 31 12 *", "2024-12-31 23:59", "2025-12-31 23:59"),  # from the match itself
        ("0 0 31 * *", "2024-04-01 00:00", "2024-05-31 00:00"),  # April has no 31st
        ("30 4 * feb *", "2024-03-01 00:00", "2025-02-01 04:30"),  # next February
        ("0 0 29 2 *", "2023-01-01 00:00", "2024-02-29 00:00"),  # the next leap day
        ("0 0 29 2 *", "2024-02-29 00:00", "2028-02-29 00:00"),
        ("0 0 29 2 *", "2097-01-01 00:00", "2104-02-29 00:00"),  # 2100 is not a leap year
        ("0 0 * * 7", "2024-06-05 12:00", "2024-06-09 00:00"),  # Wed -> Sun
        ("@weekly", "2024-06-05 12:00", "2024-06-09 00:00"),
        ("@weekly", "2024-06-09 00:00", "2024-06-16 00:00"),
        ("0 9 * * mon-fri", "2024-06-07 10:00", "2024-06-10 09:00"),  # Fri after 9 -> Mon
        ("0 9 * * mon-fri", "2024-06-10 08:59", "2024-06-10 09:00"),
    ],
)
def test_next_after(expression: str, after: str, expected: str) -> None:
    assert Cron.parse(expression).next_after(at(after)) == at(expected)


def test_every_quarter_hour() -> None:
    assert occurrences("*/15 * * * *", "2024-06-01 10:07", 4) == [
        "2024-06-01 10:15",
        "2024-06-01 10:30",
        "2024-06-01 10:45",
        "2024-06-01 11:00",
    ]


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    # The 15th (a Saturday in June 2024) *or* any Friday.
    assert occurrences("0 0 15 * fri", "2024-06-01", 5) == [
        "2024-06-07 00:00",  # Friday
        "2024-06-14 00:00",  # Friday
        "2024-06-15 00:00",  # the 15th
        "2024-06-21 00:00",  # Friday
        "2024-06-28 00:00",  # Friday
    ]


def test_day_of_month_and_day_of_week_when_either_is_a_star() -> None:
    assert occurrences("0 0 * * fri", "2024-06-01", 2) == ["2024-06-07 00:00", "2024-06-14 00:00"]
    assert occurrences("0 0 15 * *", "2024-06-01", 2) == ["2024-06-15 00:00", "2024-07-15 00:00"]
    # Vixie's quirk: '*/2' starts with '*', so it counts as unrestricted and the two day fields
    # are ANDed: odd days that are Fridays.
    assert occurrences("0 0 */2 * fri", "2024-06-01", 3) == [
        "2024-06-07 00:00",
        "2024-06-21 00:00",
        "2024-07-05 00:00",
    ]
    # The same days spelled '1-31/2' are restricted: odd days *or* Fridays.
    assert occurrences("0 0 1-31/2 * fri", "2024-06-01", 7) == [
        "2024-06-03 00:00",
        "2024-06-05 00:00",
        "2024-06-07 00:00",  # odd and a Friday
        "2024-06-09 00:00",
        "2024-06-11 00:00",
        "2024-06-13 00:00",
        "2024-06-14 00:00",  # even, but a Friday
    ]


def test_rarest_possible_day_is_found_within_the_horizon() -> None:
    # A Sunday 29 February ('*/7' is Sunday and makes the AND rule apply): 2088, then 2128.
    # The longest gap any matchable expression has; the search horizon is sized for it.
    cron = Cron.parse("0 0 29 2 */7")
    assert cron.next_after(at("2088-03-01 00:00")) == at("2128-02-29 00:00")
    assert cron.previous_at_or_before(at("2128-02-28 00:00")) == at("2088-02-29 00:00")


def test_search_is_bounded_for_a_hand_built_impossible_cron() -> None:
    # parse() refuses February 30th; a Cron built field by field is only stopped by the bound.
    never = Cron(
        minutes=frozenset({0}),
        hours=frozenset({0}),
        days_of_month=frozenset({30}),
        months=frozenset({2}),
        days_of_week=frozenset(range(7)),
        dom_star=False,
        dow_star=True,
        text="0 0 30 2 *",
    )
    with pytest.raises(ScheduleError, match=f"never matches .searched {SEARCH_HORIZON_YEARS} "):
        never.next_after(at("2024-01-01 00:00"))
    assert never.previous_at_or_before(at("2024-01-01 00:00")) is None


def test_hand_built_cron_fields_are_checked() -> None:
    with pytest.raises(
        ScheduleError, match="day-of-week values must be a non-empty set within 0-6"
    ):
        Cron(
            minutes=frozenset({0}),
            hours=frozenset({0}),
            days_of_month=frozenset({1}),
            months=frozenset({1}),
            days_of_week=frozenset({7}),
            dom_star=False,
            dow_star=False,
        )


def test_fixed_offset_timezone() -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    cron = Cron.parse("0 2 * * *")  # 02:00 wall time in the zone of the datetime given

    found = cron.next_after(datetime(2024, 6, 1, 3, 0, tzinfo=india))

    assert found == datetime(2024, 6, 2, 2, 0, tzinfo=india)
    assert found.tzinfo is india
    assert found == at("2024-06-01 20:30")
    assert cron.previous_at_or_before(found + timedelta(hours=1)) == found


def test_naive_datetimes_are_refused() -> None:
    cron = Cron.parse("@daily")
    with pytest.raises(ValueError, match="after must be a timezone-aware datetime"):
        cron.next_after(datetime(2024, 6, 1))
    with pytest.raises(ValueError, match="at must be a timezone-aware datetime"):
        cron.previous_at_or_before(datetime(2024, 6, 1))


# --- previous_at_or_before -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "at_", "expected"),
    [
        ("0 * * * *", "2024-06-01 10:00:00", "2024-06-01 10:00"),  # at the match itself
        ("0 * * * *", "2024-06-01 10:00:30", "2024-06-01 10:00"),
        ("0 * * * *", "2024-06-01 09:59:59", "2024-06-01 09:00"),
        ("0 0 * * *", "2024-06-01 00:00", "2024-06-01 00:00"),
        ("30 12 * * *", "2024-06-01 12:29", "2024-05-31 12:30"),  # day boundary
        ("0 0 31 * *", "2024-05-01 00:00", "2024-03-31 00:00"),  # April has no 31st
        ("0 0 1 1 *", "2024-06-01 00:00", "2024-01-01 00:00"),
        ("0 12 25 12 *", "2024-06-01 00:00", "2023-12-25 12:00"),  # year boundary
        ("0 0 29 2 *", "2027-01-01 00:00", "2024-02-29 00:00"),
        ("0 0 15 * fri", "2024-06-20 00:00", "2024-06-15 00:00"),  # OR rule
        ("0 0 */2 * fri", "2024-06-20 00:00", "2024-06-07 00:00"),  # AND rule
        ("45 */6 * * *", "2024-06-01 05:00", "2024-06-01 00:45"),
        ("45 */6 * * *", "2024-06-01 00:44", "2024-05-31 18:45"),
    ],
)
def test_previous_at_or_before(expression: str, at_: str, expected: str) -> None:
    assert Cron.parse(expression).previous_at_or_before(at(at_)) == at(expected)


_EXPRESSIONS = [
    "*/15 * * * *",
    "0 9 * * mon-fri",
    "0 0 15 * fri",
    "0 0 */2 * fri",
    "30 4 1,15 jan-mar,oct *",
    "0 0 29 2 *",
    "5 1-5/2 * * sun",
    "@monthly",
]


@given(
    expression=st.sampled_from(_EXPRESSIONS),
    t=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1), timezones=st.just(UTC)
    ),
)
def test_next_and_previous_agree(expression: str, t: datetime) -> None:
    cron = Cron.parse(expression)
    following = cron.next_after(t)
    preceding = cron.previous_at_or_before(t)
    assert preceding is not None
    assert preceding <= t < following
    assert following.second == following.microsecond == 0
    # Nothing matches in between: the occurrence after the preceding one is the following one.
    assert cron.next_after(preceding) == following
    assert cron.previous_at_or_before(following) == following


# --- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1s", timedelta(seconds=1)),
        ("2s", timedelta(seconds=2)),
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d", timedelta(days=1)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("1w", timedelta(weeks=1)),
        ("2w3d4h5m6s", timedelta(weeks=2, days=3, hours=4, minutes=5, seconds=6)),
        ("90m", timedelta(minutes=90)),  # no carrying rules: 90 minutes is fine
        (" 5m ", timedelta(minutes=5)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    # The last is an Arabic-Indic digit one: a digit to str.isdigit, but not to us.
    ["", "5", "m", "1.5h", "-1h", "30m1h", "1h1h", "1H", "1 h", "5ms", "1y", "\u0661h"],
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_duration(text)
    assert str(caught.value) == (
        f"duration {text!r}: expected whole numbers with units w, d, h, m, s, "
        "largest first, like '90s', '1h30m' or '1d12h'"
    )


@pytest.mark.parametrize("text", ["0s", "0h0m", "0w"])
def test_parse_duration_needs_at_least_a_second(text: str) -> None:
    with pytest.raises(ScheduleError, match=r"must be at least 1s"):
        parse_duration(text)


# --- Schedule ------------------------------------------------------------------------------


def test_schedule_of_takes_exactly_one() -> None:
    assert Schedule.of(schedule="@daily", every=None) == Schedule(cron=Cron.parse("0 0 * * *"))
    assert Schedule.of(schedule=None, every="1h") == Schedule(every=timedelta(hours=1))
    for schedule, every in [(None, None), ("@daily", "1h")]:
        with pytest.raises(ScheduleError, match="exactly one of schedule and every must be set"):
            Schedule.of(schedule=schedule, every=every)
    with pytest.raises(ScheduleError, match="exactly one"):
        Schedule()
    with pytest.raises(ScheduleError, match="at least 1s"):
        Schedule(every=timedelta(0))


def test_schedule_of_passes_parse_errors_through() -> None:
    with pytest.raises(ScheduleError, match="minute field '61'"):
        Schedule.of(schedule="61 * * * *", every=None)
    with pytest.raises(ScheduleError, match="duration '1y'"):
        Schedule.of(schedule=None, every="1y")


def test_every_next_due() -> None:
    hourly = Schedule(every=timedelta(hours=1))
    now = at("2024-06-01 12:00")
    assert hourly.next_due(None, now) == now  # a new policy snapshots at once
    assert hourly.next_due(at("2024-06-01 11:30"), now) == at("2024-06-01 12:30")
    assert hourly.next_due(at("2024-06-01 11:00"), now) == now  # exactly due
    assert hourly.next_due(at("2024-05-20 08:17"), now) == now  # long overdue: due now, once


def test_cron_next_due() -> None:
    daily = Schedule(cron=Cron.parse("@daily"))
    now = at("2024-06-01 14:05")
    assert daily.next_due(at("2024-06-01 00:00"), now) == at("2024-06-02 00:00")
    # The midnight after last has passed: due now (one catch-up), not at the missed midnight.
    assert daily.next_due(at("2024-05-31 00:00"), now) == now
    assert daily.next_due(at("2024-05-01 00:00"), now) == now


def test_first_cron_snapshot_counts_from_since() -> None:
    daily = Schedule(cron=Cron.parse("@daily"))
    now = at("2024-06-01 14:05")
    # A policy that began at 14:00 waits for its first scheduled time: midnight, not 14:05.
    assert daily.next_due(None, now, since=at("2024-06-01 14:00")) == at("2024-06-02 00:00")
    # One that began yesterday and has no snapshot missed last midnight: due now.
    assert daily.next_due(None, now, since=at("2024-05-31 14:00")) == now
    # A snapshot, once there is one, is what counts.
    assert daily.next_due(now, now, since=at("2024-05-31 14:00")) == at("2024-06-02 00:00")


def test_first_snapshot_without_since_is_due_at_once() -> None:
    # "The next occurrence after now" would never be due; with nothing to count from, a
    # policy without snapshots takes one at once, as sanoid does.
    now = at("2024-06-01 14:05")
    assert Schedule(cron=Cron.parse("@daily")).next_due(None, now) == now
    # every has no phase: since changes nothing.
    hourly = Schedule(every=timedelta(hours=1))
    assert hourly.next_due(None, now, since=at("2024-06-01 14:00")) == now


def test_cron_next_due_reads_the_expression_in_nows_timezone() -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    daily = Schedule(cron=Cron.parse("@daily"))
    last = at("2024-06-01 00:00")  # 05:30 in India
    now = datetime(2024, 6, 1, 12, 0, tzinfo=india)
    assert daily.next_due(last, now) == datetime(2024, 6, 2, 0, 0, tzinfo=india)


def test_a_last_snapshot_in_the_future_counts_as_now() -> None:
    # The clock stepped back a day: the next snapshot is one interval from now, not two.
    now = at("2024-06-01 12:00")
    tomorrow = at("2024-06-02 12:00")
    assert Schedule(every=timedelta(hours=1)).next_due(tomorrow, now) == at("2024-06-01 13:00")
    assert Schedule(cron=Cron.parse("@hourly")).next_due(tomorrow, now) == at("2024-06-01 13:00")
    assert Schedule(cron=Cron.parse("@hourly")).next_due(None, now, since=tomorrow) == at(
        "2024-06-01 13:00"
    )


def test_next_due_refuses_naive_datetimes() -> None:
    hourly = Schedule(every=timedelta(hours=1))
    with pytest.raises(ValueError, match="now must be"):
        hourly.next_due(None, datetime(2024, 6, 1))
    with pytest.raises(ValueError, match="last must be"):
        hourly.next_due(datetime(2024, 6, 1), at("2024-06-01 00:00"))
    with pytest.raises(ValueError, match="since must be"):
        Schedule(cron=Cron.parse("@daily")).next_due(
            None, at("2024-06-01 00:00"), since=datetime(2024, 6, 1)
        )


def run_loop(
    schedule: Schedule, last: datetime | None, since: datetime, taken: list[datetime]
) -> datetime | None:
    """One check of the controller: take what is due, as the reconciler will."""
    now = datetime.now(UTC)
    while schedule.next_due(last, now, since=since) <= now:
        taken.append(now)
        last = now
        assert len(taken) < 1000, "next_due never moved past now"
    return last


@pytest.mark.parametrize(
    "schedule",
    [Schedule(cron=Cron.parse("0 * * * *")), Schedule(every=timedelta(hours=1))],
    ids=["cron", "every"],
)
def test_missed_runs_give_exactly_one_catch_up_snapshot(schedule: Schedule) -> None:
    with freeze_time("2024-06-01 00:00:00") as clock:
        taken: list[datetime] = []
        last: datetime | None = None
        since = datetime.now(UTC)  # the policy was created at midnight
        # A day of normal operation, checking every ten minutes.
        for _ in range(24 * 6):
            last = run_loop(schedule, last, since, taken)
            clock.tick(timedelta(minutes=10))
        if schedule.every is not None:
            # Snapshots at once, then hourly from there: 00:00 .. 23:00.
            assert taken == [at("2024-06-01 00:00") + timedelta(hours=h) for h in range(24)]
        else:
            # The first at the first scheduled time after creation: 01:00 .. 23:00.
            assert taken == [at("2024-06-01 00:00") + timedelta(hours=h) for h in range(1, 24)]

        # It is now 2024-06-02 00:00. The service is down for ten days and 25 minutes, and
        # 240 hourly occurrences pass unseen.
        clock.tick(timedelta(days=10, minutes=25))
        taken.clear()
        last = run_loop(schedule, last, since, taken)
        assert taken == [at("2024-06-12 00:25")]  # exactly one, taken at once

        # Afterwards the schedule resumes: nothing more until the next due time.
        assert last is not None
        expected_next = "2024-06-12 01:00" if schedule.cron else "2024-06-12 01:25"
        assert schedule.next_due(last, datetime.now(UTC)) == at(expected_next)
        clock.tick(timedelta(minutes=10))
        assert run_loop(schedule, last, since, taken) == last
        assert len(taken) == 1


def test_interval_hint_for_every_is_the_interval() -> None:
    assert Schedule.of(schedule=None, every="1h30m").interval_hint() == timedelta(minutes=90)


@pytest.mark.parametrize(
    ("expression", "hint"),
    [
        ("*/15 * * * *", timedelta(minutes=15)),
        ("@daily", timedelta(days=1)),
        ("0 0 * * mon-fri", timedelta(days=3)),  # Friday to Monday
        ("0 0 1,15 * *", timedelta(days=17)),  # the 15th to the 1st of a 31-day month
        ("@monthly", timedelta(days=31)),
        ("@yearly", timedelta(days=366)),  # the next eight years include a leap year
        ("0 */6,23 * * *", timedelta(hours=6)),  # 00 06 12 18 23: uneven, largest gap 6 h
    ],
)
@freeze_time("2024-06-01 12:00:00")
def test_interval_hint_is_the_largest_gap_of_the_next_eight(
    expression: str, hint: timedelta
) -> None:
    assert Schedule(cron=Cron.parse(expression)).interval_hint() == hint


def test_interval_hint_takes_an_explicit_now() -> None:
    # Eight occurrences from June 2024 are June..Jan: the longest month gap is 31 days. From a
    # now just before 2025-02-01, the eight are Feb..Sep 2025, and still 31 (e.g. Mar->Apr).
    monthly = Schedule(cron=Cron.parse("@monthly"))
    assert monthly.interval_hint(at("2025-01-31 23:00")) == timedelta(days=31)
    # Every 29 February: the 2100 gap is eight years.
    leap = Schedule(cron=Cron.parse("0 0 29 2 *"))
    assert leap.interval_hint(at("2090-01-01 00:00")) == timedelta(days=8 * 365 + 1)


# --- daylight-saving changes (a real zone: Europe/Berlin, changes on 2026-03-29 and 10-25) --

BERLIN = ZoneInfo("Europe/Berlin")


def nightly(expression: str, start: datetime, days: int) -> list[str]:
    """Every snapshot a policy takes, as the controller takes them: due, taken, next."""
    schedule, taken, now = Schedule.of(schedule=expression, every=None), [], start
    last = start
    while now < start + timedelta(days=days):
        due = schedule.next_due(last, now)
        if due <= now:
            taken.append(now.isoformat(timespec="minutes"))
            last = now
        now = schedule.next_due(last, now)
    return taken


def test_a_time_skipped_by_spring_forward_runs_once_after_the_gap() -> None:
    start = datetime(2026, 3, 27, 12, 0, tzinfo=BERLIN)
    assert nightly("30 2 * * *", start, 4) == [
        "2026-03-28T02:30+01:00",
        "2026-03-29T03:00+02:00",  # 02:30 does not exist that night
        "2026-03-30T02:30+02:00",
        "2026-03-31T02:30+02:00",
    ]


def test_a_time_repeated_by_fall_back_runs_once() -> None:
    start = datetime(2026, 10, 23, 12, 0, tzinfo=BERLIN)
    assert nightly("0 2 * * *", start, 4) == [
        "2026-10-24T02:00+02:00",
        "2026-10-25T02:00+02:00",  # 02:00 comes twice that night; one snapshot
        "2026-10-26T02:00+01:00",
        "2026-10-27T02:00+01:00",
    ]


def test_a_wildcard_hour_runs_in_every_real_minute_it_names() -> None:
    cron, t, found = Cron.parse("*/30 * * * *"), datetime(2026, 10, 25, 1, 50, tzinfo=BERLIN), []
    while len(found) < 5:
        t = cron.next_after(t)
        found.append(t.isoformat(timespec="minutes"))
    assert found == [
        "2026-10-25T02:00+02:00",
        "2026-10-25T02:30+02:00",
        "2026-10-25T02:00+01:00",
        "2026-10-25T02:30+01:00",
        "2026-10-25T03:00+01:00",
    ]


def test_the_local_zone_keeps_its_daylight_saving_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    zone = local_zone()
    assert datetime(2026, 1, 1, tzinfo=zone).utcoffset() == timedelta(hours=1)
    assert datetime(2026, 7, 1, tzinfo=zone).utcoffset() == timedelta(hours=2)


def test_an_unknown_tz_falls_back_to_the_current_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Nowhere/Atlantis")
    zone = local_zone()
    assert zone.utcoffset(datetime.now()) == datetime.now().astimezone().utcoffset()
