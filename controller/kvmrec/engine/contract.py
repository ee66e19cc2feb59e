"""The reconcile contract: what a reconcile returns, and what its raising means.

A reconcile is a function from a key to a :class:`Result`; raising :class:`PermanentError`
means "do not retry until the input changes", :class:`Superseded` "run again at once",
anything else "retry with backoff" (engine/workers.py honours it). It lives apart from the
thread pool so that the kinds can speak the contract without importing the threads that
run them.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

__all__ = ["Outcome", "PermanentError", "Reconcile", "ReconcileMany", "Result", "Superseded"]

K_contra = TypeVar("K_contra", bound=Hashable, contravariant=True)


@dataclass(frozen=True)
class Result:
    """A successful reconcile. ``requeue_after``: seconds until it should run again anyway."""

    requeue_after: float | None = None

    def __post_init__(self) -> None:
        if self.requeue_after is not None and self.requeue_after < 0:
            raise ValueError(f"requeue_after must not be negative, got {self.requeue_after!r}")


@dataclass
class Outcome:
    """How one of several reconciles run at once ended, and the real seconds it ran for."""

    result: Result | None = None
    error: Exception | None = None
    duration: float = 0.0


class PermanentError(Exception):
    """A reconcile that cannot succeed until its input changes; it is not retried.

    Examples: a spec that validates against the schema but is impossible on this host, a
    conflict with an object kvmrec does not own, a dependency the user has to create. Retrying
    would only repeat the failure; the reconciler should record why in a condition, and the
    key comes back through the queue when the manifest (or the resync) adds it again.
    """


class Superseded(Exception):
    """A reconcile whose outcome was not kept: another writer changed what it had read (a
    status written meanwhile by a command). It runs again at once from a fresh read, no
    failure; only a key superseded again and again waits a backoff (engine/workers.py)."""


class Reconcile(Protocol[K_contra]):
    """Reconcile one key; see the module docstring for what returning and raising mean."""

    def __call__(self, key: K_contra, /) -> Result: ...


class ReconcileMany(Protocol[K_contra]):
    """Reconcile several keys at once: how each ended, in order (engine/stages.py)."""

    def __call__(self, keys: Sequence[K_contra], /) -> Sequence[Outcome]: ...
