"""Retention: PBS prune semantics, checked against tables worked out by hand.

Each table lists snapshots newest first, as ``(time, expected)``, where ``expected`` is the rule
that keeps the snapshot or ``"prune"``; the comment on a row says why. All times are UTC unless
a test says otherwise. ``check`` also feeds every table in reverse order, since the answer must
not depend on how the caller happened to list the snapshots.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmrec.snapshots.retention import Decision, Retention, select

Table = list[tuple[str, str]]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def check(table: Table, retention: Retention) -> None:
    times = [text for text, _ in table]
    assert len(set(times)) == len(times), "tables use distinct times; ties have their own test"
    expected = dict(table)
    for items in (times, times[::-1]):
        decision = select(items, at, retention)
        got = {text: decision.reasons.get(text, "prune") for text in times}
        assert got == expected
        # Both halves come back newest first, whatever the input order was.
        assert list(decision.keep) == [t for t in times if expected[t] != "prune"]
        assert list(decision.prune) == [t for t in times if expected[t] == "prune"]


def test_keep_last_keeps_the_newest_n() -> None:
    check(
        [
            ("2024-03-10 12:00", "last"),
            ("2024-03-10 11:00", "last"),
            ("2024-03-10 10:00", "last"),
            ("2024-03-09 12:00", "prune"),  # fourth newest: keep_last=3 is used up
            ("2024-03-08 12:00", "prune"),
        ],
        Retention(keep_last=3),
    )


def test_daily_keeps_the_newest_snapshot_of_each_day() -> None:
    check(
        [
            ("2024-03-10 18:00", "daily"),  # newest of Mar 10: day 1 of 3
            ("2024-03-10 06:00", "prune"),  # older snapshot of a day daily already holds
            ("2024-03-09 23:59", "daily"),  # newest of Mar 9: day 2
            ("2024-03-09 12:00", "prune"),  # same day
            ("2024-03-09 00:00", "prune"),  # same day, its first minute
            ("2024-03-08 12:00", "daily"),  # Mar 8: day 3
            ("2024-03-07 12:00", "prune"),  # a fourth day: the rule stops
        ],
        Retention(daily=3),
    )


def test_days_without_snapshots_do_not_use_up_the_count() -> None:
    # The host was down from Mar 7 to Mar 9: daily=3 counts days that *have* snapshots, so it
    # reaches back past the gap instead of keeping a single snapshot.
    check(
        [
            ("2024-03-10 00:00", "daily"),  # day 1
            # no snapshots on Mar 9, 8, 7
            ("2024-03-06 00:00", "daily"),  # day 2
            ("2024-03-05 12:00", "daily"),  # day 3
            ("2024-03-05 06:00", "prune"),  # same day as the one above
            ("2024-03-04 00:00", "prune"),  # a fourth day
        ],
        Retention(daily=3),
    )


def test_daily_skips_a_day_already_covered_by_hourly() -> None:
    # PBS: a rule first collects the periods of snapshots kept by earlier rules and does not
    # spend its count on them. Mar 10 holds hourly-kept snapshots, so the two daily snapshots
    # come from Mar 9 and Mar 8, and Mar 10 08:00 is kept by nobody.
    check(
        [
            ("2024-03-10 12:30", "hourly"),  # hour 12 of Mar 10: hourly period 1
            ("2024-03-10 12:10", "prune"),  # same hour: hourly marks it for removal
            ("2024-03-10 11:00", "hourly"),  # hour 11: hourly period 2
            ("2024-03-10 08:00", "prune"),  # hourly is full; daily: Mar 10 already covered
            ("2024-03-09 20:00", "daily"),  # day 1 for daily
            ("2024-03-09 10:00", "prune"),  # same day
            ("2024-03-08 20:00", "daily"),  # day 2
            ("2024-03-07 20:00", "prune"),  # a third day: daily=2 is used up
        ],
        Retention(hourly=2, daily=2),
    )


def test_keep_last_covers_its_day_for_daily() -> None:
    # The PBS docs' classic: keep-last=1 keep-daily=2 keeps today's newest and the two days
    # before it, not today's newest twice over.
    check(
        [
            ("2024-03-10 18:00", "last"),
            ("2024-03-10 06:00", "prune"),  # daily: Mar 10 is covered by the last-kept one
            ("2024-03-09 18:00", "daily"),
            ("2024-03-08 18:00", "daily"),
            ("2024-03-07 18:00", "prune"),
        ],
        Retention(keep_last=1, daily=2),
    )


def test_weeks_are_iso_weeks_across_new_year_2021() -> None:
    # 2020 has 53 ISO weeks: Thu 2020-12-31 and Sun 2021-01-03 are both 2020-W53, and
    # 2021-W01 starts on Mon 2021-01-04. The calendar year is irrelevant.
    check(
        [
            ("2021-01-04 00:00", "weekly"),  # Mon, 2021-W01: week 1 of 3
            ("2021-01-03 00:00", "weekly"),  # Sun, 2020-W53: week 2
            ("2020-12-31 00:00", "prune"),  # Thu, 2020-W53 too, though a different year
            ("2020-12-27 00:00", "weekly"),  # Sun, 2020-W52: week 3
            ("2020-12-21 00:00", "prune"),  # Mon, 2020-W52: same week as the one above
            ("2020-12-20 00:00", "prune"),  # Sun, 2020-W51: a fourth week
        ],
        Retention(weekly=3),
    )


def test_weeks_are_iso_weeks_across_new_year_2025() -> None:
    # Mon 2024-12-30 already belongs to 2025-W01.
    check(
        [
            ("2025-01-05 12:00", "weekly"),  # Sun, 2025-W01
            ("2024-12-30 12:00", "prune"),  # Mon, 2025-W01 as well
            ("2024-12-29 12:00", "weekly"),  # Sun, 2024-W52
            ("2024-12-23 12:00", "prune"),  # Mon, 2024-W52 as well
        ],
        Retention(weekly=2),
    )


def test_month_ends_in_a_leap_year() -> None:
    check(
        [
            ("2024-03-01 00:00", "monthly"),  # March: month 1 of 3
            ("2024-02-29 23:59", "monthly"),  # the leap day's last minute is February's newest
            ("2024-02-01 00:00", "prune"),  # February again
            ("2024-01-31 23:59", "monthly"),  # January, one minute before February began
            ("2024-01-01 00:00", "prune"),  # January again
            ("2023-12-31 23:59", "prune"),  # a fourth month
        ],
        Retention(monthly=3),
    )


def test_month_ends_in_a_common_year() -> None:
    check(
        [
            ("2023-03-01 00:00", "monthly"),  # March
            ("2023-02-28 23:59", "monthly"),  # Feb 28 is February's last day in 2023
            ("2023-02-01 00:00", "prune"),  # February again
        ],
        Retention(monthly=2),
    )


def test_leap_day_under_daily_monthly_and_yearly() -> None:
    check(
        [
            ("2024-03-01 00:00", "daily"),  # daily day 1
            ("2024-02-29 12:00", "daily"),  # daily day 2: the leap day is a day like any other
            ("2024-02-29 06:00", "prune"),  # same day: daily marks it for removal
            # Daily is full. Monthly and yearly both see Feb 2024 / 2024 as covered.
            ("2024-02-28 12:00", "prune"),
            ("2024-01-15 12:00", "monthly"),  # monthly month 1 (Mar and Feb are covered)
            ("2023-12-31 12:00", "monthly"),  # monthly month 2
            ("2023-06-30 12:00", "prune"),  # yearly: 2023 is covered by the Dec 31 monthly one
            ("2022-02-28 12:00", "yearly"),  # yearly year 1
            ("2020-02-29 12:00", "yearly"),  # yearly year 2: the previous leap day
            ("2019-01-01 00:00", "prune"),  # a third year
        ],
        Retention(daily=2, monthly=2, yearly=2),
    )


def test_yearly_across_new_year() -> None:
    check(
        [
            ("2025-01-01 00:00", "yearly"),  # 2025
            ("2024-12-31 23:59", "yearly"),  # one minute earlier, but 2024
            ("2024-01-01 00:00", "prune"),  # 2024 again
            ("2023-12-31 23:59", "prune"),  # a third year
        ],
        Retention(yearly=2),
    )


def test_a_removal_mark_is_final_even_for_a_later_rule() -> None:
    # Pins PBS exactly: mark_selections skips *every* snapshot an earlier rule marked, removals
    # included. ISO week 2024-W05 runs Mon Jan 29 to Sun Feb 4, so weekly keeps Feb 1 and marks
    # Jan 31 for removal; monthly then may not keep Jan 31 for January and keeps Jan 24.
    check(
        [
            ("2024-02-01 12:00", "weekly"),  # 2024-W05, the only week weekly=1 keeps
            ("2024-01-31 12:00", "prune"),  # 2024-W05 too: marked by weekly, final
            ("2024-01-24 12:00", "monthly"),  # January (February is covered)
            ("2023-12-20 12:00", "monthly"),  # December
            ("2023-11-20 12:00", "prune"),  # a third month
        ],
        Retention(weekly=1, monthly=2),
    )


def test_all_zero_keeps_everything() -> None:
    check(
        [
            ("2024-03-10 12:00", "all"),
            ("2024-03-10 11:59", "all"),
            ("2020-01-01 00:00", "all"),
        ],
        Retention(),
    )
    assert Retention().keeps_everything
    assert not Retention(yearly=1).keeps_everything


def test_counts_larger_than_available() -> None:
    check(
        [
            ("2024-03-10 12:00", "last"),
            ("2024-03-09 12:00", "last"),
            ("2024-03-08 12:00", "last"),
        ],
        Retention(keep_last=10, daily=30),
    )
    # A big count does not rescue the older snapshots of a day: they are the same period.
    check(
        [
            ("2024-03-10 12:00", "daily"),
            ("2024-03-10 11:00", "prune"),
            ("2024-03-09 12:00", "daily"),
            ("2024-03-09 11:00", "prune"),
        ],
        Retention(daily=30),
    )


def test_no_items() -> None:
    assert select([], at, Retention(daily=3)) == Decision(keep=(), prune=(), reasons={})


def test_periods_are_cut_in_the_timezone_of_the_datetimes() -> None:
    # 23:30 and 00:30 UTC are two UTC days but one day at UTC+2 (01:30 and 02:30 on Mar 11).
    items = ["2024-03-11 00:30", "2024-03-10 23:30"]
    plus_two = timezone(timedelta(hours=2))

    in_utc = select(items, at, Retention(daily=5))
    local = select(items, lambda t: at(t).astimezone(plus_two), Retention(daily=5))

    assert in_utc.keep == ("2024-03-11 00:30", "2024-03-10 23:30")
    assert local.keep == ("2024-03-11 00:30",)
    assert local.prune == ("2024-03-10 23:30",)


def test_equal_times_keep_input_order_as_tiebreak() -> None:
    same = at("2024-03-10 12:00")
    assert select(["a", "b"], lambda _: same, Retention(keep_last=1)).keep == ("a",)
    assert select(["b", "a"], lambda _: same, Retention(keep_last=1)).keep == ("b",)
    # Under daily they share a day: the earlier in the input counts as the newer one.
    decision = select(["b", "a"], lambda _: same, Retention(daily=1))
    assert (decision.keep, decision.prune) == (("b",), ("a",))


def test_items_must_be_distinct() -> None:
    with pytest.raises(ValueError, match="distinct"):
        select(["a", "a"], lambda _: at("2024-03-10 12:00"), Retention(daily=1))


@pytest.mark.parametrize("bad", [-1, True, 1.5])
def test_counts_must_be_non_negative_integers(bad: object) -> None:
    with pytest.raises(ValueError, match="daily must be a non-negative integer"):
        Retention(daily=bad)  # type: ignore[arg-type]


# Half-hour steps over two years: dense enough that hours, days, weeks and months get several
# snapshots each, and ties happen often enough to exercise the tiebreak.
_BASE = datetime(2023, 1, 1, tzinfo=UTC)
_times = st.integers(0, 2 * 365 * 48).map(lambda n: _BASE + n * timedelta(minutes=30))
_counts = st.integers(0, 4)
_retentions = st.builds(
    Retention,
    keep_last=_counts,
    hourly=_counts,
    daily=_counts,
    weekly=_counts,
    monthly=_counts,
    yearly=_counts,
)


@given(times=st.lists(_times, max_size=40), retention=_retentions, data=st.data())
def test_properties(times: list[datetime], retention: Retention, data: st.DataObject) -> None:
    items = list(range(len(times)))  # item i was taken at times[i]
    decision = select(items, times.__getitem__, retention)

    # A partition of the input, and only kept items have reasons.
    assert set(decision.keep) | set(decision.prune) == set(items)
    assert not set(decision.keep) & set(decision.prune)
    assert set(decision.reasons) == set(decision.keep)
    # Newest first.
    for half in (decision.keep, decision.prune):
        assert [times[i] for i in half] == sorted((times[i] for i in half), reverse=True)
    # keep_last=k keeps the k newest, whatever the other rules do.
    newest = sorted(items, key=times.__getitem__, reverse=True)[: retention.keep_last]
    assert set(newest) <= set(decision.keep)

    # Independent of input order: identical when times are distinct, and up to swapping
    # items with equal times otherwise (same kept times, same reasons).
    shuffled = data.draw(st.permutations(items))
    again = select(shuffled, times.__getitem__, retention)
    if len(set(times)) == len(times):
        assert again == decision
    else:
        assert [(times[i], again.reasons[i]) for i in again.keep] == [
            (times[i], decision.reasons[i]) for i in decision.keep
        ]
