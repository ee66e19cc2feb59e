"""Reconciles in stages: run alone, or interleaved a stage of each in turn, each in a context
of its own, an exception ending only its own reconcile; and workers that take the ready keys
in batches when reconciles are short, one at a time when they are long."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Sequence

import pytest

from kvmrec.engine import backoff as backoffs
from kvmrec.engine import queue as queues
from kvmrec.engine import stages, workers
from kvmrec.engine.contract import Outcome, PermanentError, Result

Eventually = Callable[[Callable[[], bool]], None]
_about: contextvars.ContextVar[str] = contextvars.ContextVar("about", default="-")


def _three_stages(name: str, log: list[str], fail_at: int | None = None) -> stages.Stages:
    token = _about.set(name)
    try:
        for stage in range(3):
            if stage == fail_at:
                raise RuntimeError(f"{name} failed at {stage}")
            log.append(f"{_about.get()}{stage}")
            yield
        return Result(requeue_after=float(len(name)))
    finally:
        _about.reset(token)


def test_run_takes_a_reconcile_in_stages_to_its_result() -> None:
    log: list[str] = []
    assert stages.run(_three_stages("abc", log)) == Result(requeue_after=3.0)
    assert log == ["abc0", "abc1", "abc2"]


def test_interleave_runs_a_stage_of_each_in_turn_each_in_its_own_context() -> None:
    log: list[str] = []
    outcomes = stages.interleave(
        [lambda: _three_stages("a", log), lambda: _three_stages("bb", log)]
    )
    # Each reconcile sees its own value of the context variable, never the other's.
    assert log == ["a0", "bb0", "a1", "bb1", "a2", "bb2"]
    assert [o.result for o in outcomes] == [Result(1.0), Result(2.0)]
    assert all(o.error is None and o.duration >= 0 for o in outcomes)
    assert _about.get() == "-"  # the caller's context is untouched
    caller = contextvars.copy_context()
    caller.run(_about.set, "caller")
    caller.run(stages.interleave, [lambda: _three_stages("c", log)])
    assert log[-3:] == ["c0", "c1", "c2"]
    assert caller.run(_about.get) == "caller"


def test_an_exception_ends_only_its_own_reconcile() -> None:
    log: list[str] = []
    outcomes = stages.interleave(
        [
            lambda: _three_stages("a", log, fail_at=1),
            lambda: _three_stages("b", log),
            lambda: _three_stages("c", log, fail_at=0),
        ]
    )
    assert log == ["a0", "b0", "b1", "b2"]
    assert outcomes[0].result is None and "a failed at 1" in str(outcomes[0].error)
    assert outcomes[1].result == Result(1.0) and outcomes[1].error is None
    assert outcomes[2].result is None and "c failed at 0" in str(outcomes[2].error)


def test_a_reconcile_that_cannot_even_start_is_an_outcome_of_its_own() -> None:
    def broken() -> stages.Stages:
        raise PermanentError("no reconciler")

    log: list[str] = []
    outcomes = stages.interleave([broken, lambda: _three_stages("b", log)])
    assert isinstance(outcomes[0].error, PermanentError)
    assert outcomes[1].result == Result(1.0)


# -- workers taking batches ----------------------------------------------------------------


class Batches:
    """A reconcile_many that records the batches it is given, and a reconcile for one key."""

    def __init__(self, fail: set[str] | None = None, permanent: set[str] | None = None) -> None:
        self.batches: list[list[str]] = []
        self.singles: list[str] = []
        self.fail = fail or set()
        self.permanent = permanent or set()
        self.lock = threading.Lock()

    def outcome(self, key: str) -> Outcome:
        if key in self.permanent:
            return Outcome(error=PermanentError(f"{key}: never"), duration=0.0001)
        if key in self.fail:
            return Outcome(error=RuntimeError(f"{key}: boom"), duration=0.0001)
        return Outcome(result=Result(), duration=0.0001)

    def one(self, key: str) -> Result:
        with self.lock:
            self.singles.append(key)
        outcome = self.outcome(key)
        if outcome.error is not None:
            raise outcome.error
        assert outcome.result is not None
        return outcome.result

    def many(self, keys: Sequence[str]) -> Sequence[Outcome]:
        with self.lock:
            self.batches.append(list(keys))
        return [self.outcome(key) for key in keys]


def _taken(calls: Batches) -> list[str]:
    with calls.lock:
        return sorted([key for batch in calls.batches for key in batch] + calls.singles)


def _drain(
    calls: Batches, keys: list[str], typical: float | None, eventually: Eventually
) -> queues.WorkQueue[str]:
    """One worker taking ``keys``, as if it had seen reconciles of ``typical`` seconds,
    until every key was reconciled once."""
    q: queues.WorkQueue[str] = queues.WorkQueue(
        backoff=backoffs.Backoff(backoffs.BackoffSettings(jitter=0.0))
    )
    pool = workers.Workers(q, calls.one, count=1, reconcile_many=calls.many, max_batch=8)
    pool._typical = typical
    for key in keys:
        q.add(key)
    pool.start()
    try:
        eventually(lambda: len(_taken(calls)) == len(keys) and not q.is_busy())
    finally:
        pool.stop(timeout=2)
    return q


def test_short_reconciles_are_taken_in_batches_of_at_most_max_batch(
    eventually: Eventually,
) -> None:
    calls = Batches()
    keys = [f"k{i:02d}" for i in range(20)]
    _drain(calls, keys, 0.0001, eventually)
    assert _taken(calls) == keys
    assert [len(b) for b in calls.batches] == [8, 8, 4]


def test_long_reconciles_go_one_at_a_time(eventually: Eventually) -> None:
    calls = Batches()
    keys = [f"k{i}" for i in range(5)]
    _drain(calls, keys, 1.0, eventually)  # a second each: a guest's start
    assert calls.batches == []
    assert sorted(calls.singles) == keys


@pytest.mark.parametrize("typical", [None, 0.0001])
def test_outcomes_of_a_batch_are_honoured_key_by_key(
    typical: float | None, eventually: Eventually
) -> None:
    calls = Batches(fail={"bad"}, permanent={"never"})
    q = _drain(calls, ["ok1", "bad", "never", "ok2"], typical, eventually)
    if typical is not None:
        assert calls.batches == [["ok1", "bad", "never", "ok2"]]
    assert q.num_requeues("bad") == 1  # retried with backoff
    assert q.num_requeues("never") == 0  # not retried
    assert q.num_requeues("ok1") == 0 and q.num_requeues("ok2") == 0
