"""Records as the JSON values of their keys (statuses use the store-wide codec)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kvmrec.api.objects import ObjectKey
from kvmrec.store import codec
from kvmrec.store.records import Event, ReconcileRecord, Revision, SnapshotRecord, StoredObject

from .keys import NO_OBJECT


def _dump(value: Mapping[str, Any]) -> bytes:
    return codec.dump(value).encode()


def object_value(obj: StoredObject) -> bytes:
    return _dump(
        {
            "uid": obj.uid,
            "generation": obj.generation,
            "digest": obj.digest,
            "spec": obj.spec,
            "source": obj.source,
            "labels": dict(obj.labels),
            "annotations": dict(obj.annotations),
            "deleting": obj.deleting,
        }
    )


def stored_object(key: ObjectKey, value: bytes) -> StoredObject:
    body = json.loads(value)
    return StoredObject(
        key=key,
        uid=body["uid"],
        generation=body["generation"],
        digest=body["digest"],
        spec=body["spec"],
        source=body["source"],
        labels=body.get("labels", {}),
        annotations=body.get("annotations", {}),
        deleting=bool(body.get("deleting", False)),
    )


def revision_value(revision: Revision) -> bytes:
    return _dump(
        {
            "generation": revision.generation,
            "digest": revision.digest,
            "spec": revision.spec,
            "source": revision.source,
            "time": codec.time(revision.time),
            "commit": revision.commit,
        }
    )


def revision(key: ObjectKey, value: bytes) -> Revision:
    body = json.loads(value)
    return Revision(
        key=key,
        generation=body["generation"],
        digest=body["digest"],
        spec=body["spec"],
        source=body["source"],
        time=datetime.fromisoformat(body["time"]),
        commit=body.get("commit"),
    )


def event_value(
    key: ObjectKey | None, type_: str, reason: str, message: str, now: datetime
) -> bytes:
    # json.dumps refuses what is not text here (no default=str): a bad event fails its write.
    for text in (type_, reason, message):
        if not isinstance(text, str):
            raise TypeError(f"an event's type, reason and message are text, not {text!r}")
    return _dump(
        {
            "kind": key.kind if key else NO_OBJECT,
            "name": key.name if key else NO_OBJECT,
            "type": type_,
            "reason": reason,
            "message": message,
            "time": codec.time(now),
        }
    )


def event(value: bytes, seq: int) -> Event:
    body = json.loads(value)
    kind, name = body["kind"], body["name"]
    return Event(
        time=datetime.fromisoformat(body["time"]),
        key=None if kind == NO_OBJECT else ObjectKey(kind, name),
        type=body["type"],
        reason=body["reason"],
        message=body["message"],
        seq=seq,
    )


def event_time(value: bytes) -> datetime:
    return datetime.fromisoformat(json.loads(value)["time"])


def reconcile_value(record: ReconcileRecord) -> bytes:
    return _dump(
        {
            "time": codec.time(record.time),
            "duration": record.duration,
            "result": record.result,
            "message": record.message,
        }
    )


def reconcile(key: ObjectKey, value: bytes) -> ReconcileRecord:
    body = json.loads(value)
    return ReconcileRecord(
        key,
        datetime.fromisoformat(body["time"]),
        body["duration"],
        body["result"],
        body.get("message"),
    )


def snapshot_value(snapshot: SnapshotRecord) -> bytes:
    return _dump(
        {
            "domain": snapshot.domain,
            "name": snapshot.name,
            "policy": snapshot.policy,
            "time": codec.time(snapshot.time),
            "quiesced": snapshot.quiesced,
            "memory": snapshot.memory,
        }
    )


def snapshot(value: bytes) -> SnapshotRecord:
    body = json.loads(value)
    return SnapshotRecord(
        domain=body["domain"],
        name=body["name"],
        policy=body.get("policy"),
        time=datetime.fromisoformat(body["time"]),
        quiesced=bool(body["quiesced"]),
        memory=bool(body["memory"]),
    )
