"""Status conditions: their order and transition times (records, no store needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kvmrec.store.records import Status

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_with_condition_moves_transition_time_only_when_status_changes() -> None:
    status = Status().with_condition("Ready", "False", "NotRunning", "shut off", at(0))
    same = status.with_condition("Ready", "False", "Crashed", "crashed", at(5))
    ready = same.condition("Ready")
    assert ready is not None
    assert (ready.reason, ready.message) == ("Crashed", "crashed")
    assert ready.last_transition_time == at(0)

    flipped = same.with_condition("Ready", "True", "Running", "", at(9)).condition("Ready")
    assert flipped is not None
    assert (flipped.status, flipped.last_transition_time) == ("True", at(9))


def test_with_condition_orders_conditions() -> None:
    status = (
        Status()
        .with_condition("Degraded", "False", "Ok", "", at(0))
        .with_condition("Custom", "True", "Yes", "", at(0))
        .with_condition("Synced", "True", "Synced", "", at(0))
        .with_condition("RestartRequired", "True", "DefinitionChanged", "", at(0))
        .with_condition("Ready", "True", "Running", "", at(0))
    )
    assert [c.type for c in status.conditions] == [
        "Ready",
        "Synced",
        "RestartRequired",
        "Degraded",
        "Custom",
    ]
    assert status.is_true("RestartRequired")


def test_conditions_with_is_with_condition_of_each_in_turn() -> None:
    start = (
        Status()
        .with_condition("Reverted", "True", "Reverted", "to s1", at(0))
        .with_condition("Synced", "True", "Synced", "", at(0))
        .with_condition("Installed", "False", "Installing", "", at(1))
        .with_condition("Ready", "False", "NotRunning", "", at(1))
    )
    updates = [
        ("Ready", "True", "Running", ""),  # flips: a new transition time
        ("Reverted", "True", "Reverted", "to s2"),  # same status: its time stays
        ("BelowOSMinimum", "True", "BelowMinimum", "memory"),  # new
        ("Ready", "True", "Running", "again"),  # a type twice: the last one counts
        ("Synced", "False", "Drifted", "spec.vcpus"),
    ]
    one_by_one = start
    for update in updates:
        one_by_one = one_by_one.with_condition(*update, at(7))
    assert start.conditions_with(updates, at(7)) == tuple(one_by_one.conditions)
    # Conditions kvmrec has no order for keep the order they were set in.
    assert [c.type for c in one_by_one.conditions][2:] == [
        "Installed",
        "Reverted",
        "BelowOSMinimum",
    ]
