"""The scheduler's loop outlives etcd going away: a pass, or the watch that wakes it,
failing on an unreachable etcd is retried soon, never the end of the scheduler."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from kvmrec.fleet import leader as leaders
from kvmrec.store.etcd.gateway import EtcdUnavailable


class LeadingElection:
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def is_leader(self) -> bool:
        return True


class Nothing:
    """An empty fleet: no hosts, objects, placements or statuses."""

    def hosts(self) -> list[Any]:
        return []

    def list(self) -> list[Any]:
        return []

    def placements(self, _kind: str) -> dict[Any, Any]:
        return {}

    def host_statuses(self) -> list[Any]:
        return []


class Subscription:
    def stop(self) -> None: ...


class Watching:
    def __init__(self) -> None:
        self.started = threading.Event()

    def watch(self, _prefixes: Sequence[str], _revision: int, *_callbacks: Any) -> Subscription:
        self.started.set()
        return Subscription()


def flaky_revision(failures: int) -> Callable[[], int]:
    """The store's revision, unreachable the first ``failures`` times."""
    calls = [0]

    def revision() -> int:
        calls[0] += 1
        if calls[0] <= failures:
            raise EtcdUnavailable("etcd at 127.0.0.1:2379 does not answer: connection refused")
        return 7

    return revision


def test_the_scheduler_keeps_running_when_etcd_is_away_as_it_starts_leading(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(leaders, "RETRY", 0.05, raising=False)
    nothing, watching = Nothing(), Watching()
    leader = leaders.Leader(
        election=LeadingElection(),  # type: ignore[arg-type]
        store=nothing,  # type: ignore[arg-type]
        hosts=nothing,  # type: ignore[arg-type]
        placements=nothing,  # type: ignore[arg-type]
        watching=watching,  # type: ignore[arg-type]
        prefixes=["/p/objects/"],
        revision=flaky_revision(2),
        now=lambda: datetime.now(UTC),
    )
    leader.start()
    try:
        assert watching.started.wait(10), "the scheduler never got its watch"
        passes = []
        original = leader.run_once
        monkeypatch.setattr(leader, "run_once", lambda: passes.append(1) or original())
        leader.wake()
        deadline = time.monotonic() + 10
        while not passes and time.monotonic() < deadline:
            time.sleep(0.01)
        assert passes, "no pass after etcd came back"
    finally:
        leader.stop()
