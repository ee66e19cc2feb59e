"""What the contract tests build their records from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from kvmrec.api.kinds import Manifest, ObjectKey
from kvmrec.store.base import Store

# Opens a new client of the one store of a test (``read_only=True``: a reader).
Opener = Callable[..., Store]


@dataclass(frozen=True)
class Capabilities:
    """Where a store differs from the others by design."""

    # A reconcile that changed nothing (the same status but for its time, no events, ok)
    # is still written (sqlite); etcd skips it, so a fleet at rest costs no writes.
    writes_quiet_reconciles: bool
    # The host a store's statuses are reported under (None: one status per object).
    host: str | None


T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
KEY = ObjectKey("Domain", "web")
SPEC = {"memory": "64Mi", "vcpus": 1, "runStrategy": "Always"}


def manifest(
    name: str = "web",
    spec: dict[str, object] | None = None,
    source: str = "web.yaml",
    kind: str = "Domain",
    **kwargs: object,
) -> Manifest:
    return Manifest(kind, name, spec if spec is not None else dict(SPEC), source, 1, **kwargs)  # type: ignore[arg-type]


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)
