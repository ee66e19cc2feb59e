"""What every kind shares: the key of an object, and one accepted manifest document.

Apart from the kinds' own models (kvmrec/api/kinds.py) so that what only names objects,
the store's records and the read-only commands, loads neither those nor the schemas.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class ObjectKey(NamedTuple):
    """What the work queue carries: a kind and a name, never the object itself."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"

    @classmethod
    def parse(cls, text: str) -> ObjectKey:
        """``KIND/NAME`` as an operator types it: the kind in any case, singular or plural
        (``domain/web-1``, ``DOMAINS/web-1``); a kind that does not exist is a ValueError
        naming the ones that do."""
        kind, sep, name = text.partition("/")
        if not sep or not kind or not name:
            raise ValueError(f"{text!r} is not KIND/NAME")
        from kvmrec.api import schema  # the CRDs, only when a kind is typed by hand

        return cls(schema.canonical_kind(kind), name)


def spec_digest(spec: Mapping[str, Any]) -> str:
    """A stable digest of a spec: the generation advances when this changes."""
    import hashlib  # here: a read-only command never digests, and its import costs 4 ms

    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Manifest:
    """One accepted document of a manifest file."""

    kind: str
    name: str
    spec: Mapping[str, Any]  # as written, with the schema's defaults filled in
    source: str
    document: int
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    # Of the spec as written: a default that a newer kvmrec adds is not a new generation.
    digest: str = ""

    def __post_init__(self) -> None:
        if not self.digest:
            object.__setattr__(self, "digest", spec_digest(self.spec))

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(self.kind, self.name)
