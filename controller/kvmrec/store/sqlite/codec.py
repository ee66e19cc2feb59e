"""How records become columns and back: JSON text for specs and statuses, ISO times in UTC."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from kvmrec.api.objects import ObjectKey
from kvmrec.store.codec import dump, parse_time, status, status_body, time
from kvmrec.store.records import StoredObject

__all__ = ["OBJECT_COLUMNS", "dump", "parse_time", "status", "status_body", "stored_object", "time"]

OBJECT_COLUMNS = "kind, name, uid, generation, digest, spec, source, labels, annotations, deleting"


def stored_object(row: Sequence[Any]) -> StoredObject:
    """An object from the ``OBJECT_COLUMNS`` of one row."""
    kind, name, uid, generation, digest, spec, source, labels, annotations, deleting = row
    return StoredObject(
        key=ObjectKey(kind, name),
        uid=uid,
        generation=generation,
        digest=digest,
        spec=json.loads(spec),
        source=source,
        labels=json.loads(labels),
        annotations=json.loads(annotations),
        deleting=bool(deleting),
    )
