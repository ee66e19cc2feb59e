"""What storing a manifest would change in the store: ``created``, ``configured`` (with
the fields that change) or ``unchanged``, as ``kubectl apply`` reports it.

Judged as the store judges an apply (store/base.py ``Objects.apply_many``): a new spec
digest, other labels, annotations or source file, or a deletion taken back is
``configured``. The fields are paths into the manifest (``spec.disks[0].size``,
``metadata.labels.tier``) with the stored and the applied value.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kvmrec.api.objects import Manifest, ObjectKey
from kvmrec.store.records import StoredObject

CREATED = "created"
CONFIGURED = "configured"
UNCHANGED = "unchanged"

_MISSING = object()


@dataclass(frozen=True)
class FieldChange:
    field: str
    stored: Any
    applied: Any


@dataclass(frozen=True)
class Change:
    key: ObjectKey
    action: str
    generation: int
    """The generation the object has once the manifest is stored."""
    fields: list[FieldChange] = field(default_factory=list)


def change(manifest: Manifest, stored: StoredObject | None) -> Change:
    """What storing ``manifest`` over ``stored`` (None: no such object yet) changes."""
    if stored is None:
        return Change(manifest.key, CREATED, 1)
    fields = list(_diff("spec", stored.spec, manifest.spec))
    fields += _diff("metadata.labels", stored.labels, manifest.labels)
    fields += _diff("metadata.annotations", stored.annotations, manifest.annotations)
    if stored.source != manifest.source:
        fields.append(FieldChange("source", stored.source, manifest.source))
    if stored.deleting:
        fields.append(FieldChange("deleting", True, False))
    new_spec = stored.digest != manifest.digest
    generation = stored.generation + (1 if new_spec else 0)
    if not fields and not new_spec:
        return Change(manifest.key, UNCHANGED, generation)
    return Change(manifest.key, CONFIGURED, generation, fields)


def _diff(path: str, stored: Any, applied: Any) -> Iterator[FieldChange]:
    if isinstance(stored, Mapping) and isinstance(applied, Mapping):
        for name in sorted(set(stored) | set(applied), key=str):
            yield from _diff(
                f"{path}.{name}", stored.get(name, _MISSING), applied.get(name, _MISSING)
            )
    elif isinstance(stored, list) and isinstance(applied, list) and len(stored) == len(applied):
        for index, (old, new) in enumerate(zip(stored, applied, strict=True)):
            yield from _diff(f"{path}[{index}]", old, new)
    elif stored != applied:
        yield FieldChange(path, _shown(stored), _shown(applied))


def _shown(value: Any) -> Any:
    return None if value is _MISSING else value


def as_json(item: Change) -> dict[str, Any]:
    return {
        "kind": item.key.kind,
        "name": item.key.name,
        "action": item.action,
        "generation": item.generation,
        "fields": [
            {"field": f.field, "stored": f.stored, "applied": f.applied} for f in item.fields
        ],
    }
