"""Which snapshots to keep: tiered retention with Proxmox Backup Server's prune semantics.

A :class:`Retention` is a set of counts, ``keep_last`` and one per calendar period (hourly,
daily, weekly, monthly, yearly). :func:`select` applies it to a list of snapshots and returns a
:class:`Decision`: what to keep, what to prune, and for every kept snapshot the rule that kept
it, so ``kvmrec explain`` can say *why* a snapshot survives.

The algorithm is PBS's ``compute_prune_info``/``mark_selections``, reproduced exactly so that an
operator who knows Proxmox (or reads its prune simulator) gets no surprises:

1. Sort the snapshots newest first. Equal times keep their input order.
2. Apply the rules in the order last, hourly, daily, weekly, monthly, yearly; a rule with a
   count of zero is skipped. Each rule maps a snapshot to a *period key*: the snapshot itself
   for ``last``, ``(date, hour)`` for hourly, the date for daily, the ISO ``(year, week)`` for
   weekly, ``(year, month)`` for monthly, the year for yearly.
3. A rule first collects the period keys of the snapshots that earlier rules already *kept*.
   Those periods are covered: the rule does not spend its count on them.
4. It then walks the snapshots newest first. A snapshot that any earlier rule or this one has
   already marked (kept *or* marked for removal) is skipped; so is one whose period is covered.
   The first snapshot of a period not yet seen by this rule is kept, unless the rule already
   holds N periods, in which case the rule stops. A later (older) snapshot of a period the rule
   already holds is marked for removal.
5. Everything left unmarked after the last rule is pruned.

Consequences worth knowing, all of them PBS's:

- The count is of periods *that have snapshots*. Three days without a snapshot (the host was
  down) do not use up ``daily=7``; the rule reaches back to older days instead.
- A rule never keeps the newest snapshot of a period an earlier rule already covered: with
  ``hourly=2, daily=3`` the day of the two hourly snapshots counts as covered, and the three
  daily snapshots come from the three days before it.
- A removal mark is final. Weeks straddle month ends, so with ``weekly`` and ``monthly`` a
  snapshot from the 31st that lost to the 1st of the same ISO week stays removed, and the
  monthly rule keeps an older snapshot of that month instead (see the tests).
- With every count zero nothing at all would be kept; like Proxmox, that configuration means
  "no retention configured" and keeps everything, with reason ``"all"``.

Periods are computed from each datetime's own fields, i.e. in the timezone it carries. The
caller decides what "a day" means by converting first: pass local-time aware datetimes to cut
days at local midnight (what PBS does, and what an operator expects), or UTC ones to cut them at
UTC midnight. Mixing zones in one call cuts each snapshot's periods in its own zone, which is
rarely what anyone wants. Naive and aware datetimes cannot be mixed (they cannot be ordered).

PBS also has "protected" snapshots and keeps the newest unfinished backup; neither applies to
libvirt snapshots, which are atomic, and a caller that wants to pin a snapshot simply leaves it
out of ``items``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from types import MappingProxyType
from typing import Generic, TypeVar

__all__ = ["Decision", "Retention", "select"]

T = TypeVar("T", bound=Hashable)


@dataclass(frozen=True)
class Retention:
    """How many snapshots to keep, per rule. Zero switches a rule off."""

    keep_last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            # bool is an int; "daily: true" in a manifest is a mistake, not a count of one.
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"retention {f.name} must be a non-negative integer, got {value!r}"
                )

    @property
    def keeps_everything(self) -> bool:
        """True when no rule is set, which means keep all snapshots (as Proxmox does)."""
        return not any(getattr(self, f.name) for f in fields(self))


@dataclass(frozen=True)
class Decision(Generic[T]):
    """The outcome of :func:`select`: a partition of the input, each half newest first."""

    keep: tuple[T, ...]
    prune: tuple[T, ...]
    reasons: Mapping[T, str]
    """For each kept item, the rule that kept it: ``"last"``, ``"hourly"``, ``"daily"``,
    ``"weekly"``, ``"monthly"``, ``"yearly"``, or ``"all"`` when no rule is set."""


# A period key: anything hashable that two snapshots share exactly when they are in the same
# period. ``last`` uses the snapshot's position, which no two snapshots share.
_PeriodKey = Callable[[int, datetime], Hashable]

_RULES: tuple[tuple[str, str, _PeriodKey], ...] = (
    ("last", "keep_last", lambda index, _t: index),
    ("hourly", "hourly", lambda _i, t: (t.date(), t.hour)),
    ("daily", "daily", lambda _i, t: t.date()),
    # ISO year and week, not calendar year: 2020-12-31 and 2021-01-03 are both 2020-W53.
    ("weekly", "weekly", lambda _i, t: tuple(t.isocalendar())[:2]),
    ("monthly", "monthly", lambda _i, t: (t.year, t.month)),
    ("yearly", "yearly", lambda _i, t: t.year),
)

_REMOVE = "remove"


def select(
    items: Iterable[T], time_of: Callable[[T], datetime], retention: Retention
) -> Decision[T]:
    """Split ``items`` into those ``retention`` keeps and those it prunes.

    ``time_of`` gives each item's creation time; periods are cut in that datetime's timezone
    (see the module docstring). Items must be distinct, because the reasons are keyed by item.
    The input order matters only among items with equal times, where it is the tiebreak: the
    earlier in the input counts as the newer.
    """
    listed = list(items)
    if len(set(listed)) != len(listed):
        raise ValueError("retention items must be distinct")
    times = [time_of(item) for item in listed]
    # sorted() is stable even with reverse=True, so equal times keep their input order.
    order = sorted(range(len(listed)), key=times.__getitem__, reverse=True)

    # Position in ``listed`` -> the rule that kept it, or _REMOVE. Absent means undecided.
    marks: dict[int, str] = {}
    if retention.keeps_everything:
        marks = dict.fromkeys(order, "all")
    else:
        for rule, attribute, period_of in _RULES:
            count: int = getattr(retention, attribute)
            if count:
                _mark(marks, order, times, count, rule, period_of)

    keep = tuple(listed[i] for i in order if marks.get(i, _REMOVE) != _REMOVE)
    prune = tuple(listed[i] for i in order if marks.get(i, _REMOVE) == _REMOVE)
    reasons = MappingProxyType(
        {listed[i]: marks[i] for i in order if marks.get(i, _REMOVE) != _REMOVE}
    )
    return Decision(keep=keep, prune=prune, reasons=reasons)


def _mark(
    marks: dict[int, str],
    order: list[int],
    times: list[datetime],
    count: int,
    rule: str,
    period_of: _PeriodKey,
) -> None:
    """One rule's pass over the snapshots, PBS's ``mark_selections``."""
    already_included = {period_of(i, times[i]) for i in order if marks.get(i, _REMOVE) != _REMOVE}
    included: set[Hashable] = set()
    for i in order:
        # Any earlier mark is final, a removal included: PBS skips every marked snapshot.
        if i in marks:
            continue
        period = period_of(i, times[i])
        if period in already_included:
            continue
        if period not in included:
            if len(included) >= count:
                break
            included.add(period)
            marks[i] = rule
        else:
            marks[i] = _REMOVE
