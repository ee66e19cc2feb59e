"""Records as JSON, the same for every store: statuses with their conditions and drift,
times as ISO text in UTC."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kvmrec.store.records import Condition, Drift, Status

_ENCODER = json.JSONEncoder(sort_keys=True, default=str)  # made once: json.dumps makes one a call


def dump(value: Any) -> str:
    return _ENCODER.encode(value)


# A reconcile writes its one ``now`` half a dozen times (its conditions, its events, its
# record): the text of the last few is kept. Equal times are the same instant, and the
# text is of that instant in UTC, so any of them gives the same text.
@functools.lru_cache(maxsize=64)
def time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def status_body(status: Status) -> str:
    return dump(
        {
            "observedGeneration": status.observed_generation,
            "conditions": [
                {
                    "type": c.type,
                    "status": c.status,
                    "reason": c.reason,
                    "message": c.message,
                    "lastTransitionTime": time(c.last_transition_time),
                }
                for c in status.conditions
            ],
            "drift": [
                {"field": d.field, "desired": d.desired, "actual": d.actual} for d in status.drift
            ],
            "lastReconcileTime": time(status.last_reconcile_time)
            if status.last_reconcile_time
            else None,
            "lastError": status.last_error,
            "retries": status.retries,
            "details": dict(status.details),
        }
    )


def status(text: str) -> Status:
    body: Mapping[str, Any] = json.loads(text)
    return Status(
        observed_generation=body.get("observedGeneration", 0),
        conditions=tuple(
            Condition(
                type=c["type"],
                status=c["status"],
                reason=c["reason"],
                message=c["message"],
                last_transition_time=datetime.fromisoformat(c["lastTransitionTime"]),
            )
            for c in body.get("conditions", [])
        ),
        drift=tuple(Drift(d["field"], d["desired"], d["actual"]) for d in body.get("drift", [])),
        last_reconcile_time=parse_time(body.get("lastReconcileTime")),
        last_error=body.get("lastError"),
        retries=body.get("retries", 0),
        details=body.get("details", {}),
    )
