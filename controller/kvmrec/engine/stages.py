"""Reconciles in stages, and several of them interleaved on one thread.

A reconcile may be written as a generator that yields between the phases of its work
(after observing, after each step, after observing again) and returns its :class:`Result`.
Run alone it is an ordinary reconcile (:func:`run`). :func:`interleave` runs several, each
phase of every one before the next phase of any: the same backend call for one object after
another, which costs far less than each object's calls between the rest of its reconcile
(libvirt's test driver: define and start 0.4 ms a guest back to back, 0.8 ms amid a
reconcile's Python), and their final writes can go to the store together.

Each runs in a context of its own (``contextvars``), so what a reconcile keeps in context
variables (the object its log lines are about, the status write it holds) stays its own
while the others run. An exception ends that reconcile alone.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Generator, Sequence

from kvmrec.engine.contract import Outcome, Result

__all__ = ["Stages", "interleave", "run"]

Stages = Generator[None, None, Result]


def run(stages: Stages) -> Result:
    """A reconcile in stages, run to its end."""
    while True:
        try:
            next(stages)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


def interleave(starts: Sequence[Callable[[], Stages]]) -> list[Outcome]:
    """Run each reconcile ``starts`` makes, a stage of each in turn, to their ends."""
    runs: list[tuple[contextvars.Context, Stages, Outcome]] = []
    outcomes = [Outcome() for _ in starts]
    for start, outcome in zip(starts, outcomes, strict=True):
        context = contextvars.copy_context()
        began = time.perf_counter()
        try:
            runs.append((context, context.run(start), outcome))
        except Exception as exc:
            outcome.error = exc
        outcome.duration += time.perf_counter() - began
    while runs:
        going = []
        for context, stages, outcome in runs:
            began = time.perf_counter()
            try:
                context.run(next, stages)
                going.append((context, stages, outcome))
            except StopIteration as stop:
                outcome.result = stop.value
            except Exception as exc:
                outcome.error = exc
            finally:
                outcome.duration += time.perf_counter() - began
        runs = going
    return outcomes
