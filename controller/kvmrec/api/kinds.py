"""Typed models of the kinds, built from validated, defaulted manifest specs.

The store keeps specs as plain JSON (what the operator wrote, with schema defaults filled
in); reconcilers turn them into these frozen dataclasses. Sizes are canonical integers
(bytes), so comparing a manifest with what libvirt reports never trips on ``64Mi`` versus
``65536 KiB``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from kvmrec.api import quantities

ADOPT_ANNOTATION = "kvmrec.io/adopt"


class ObjectKey(NamedTuple):
    """What the work queue carries: a kind and a name, never the object itself."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"

    @classmethod
    def parse(cls, text: str) -> ObjectKey:
        kind, sep, name = text.partition("/")
        if not sep or not kind or not name:
            raise ValueError(f"{text!r} is not KIND/NAME")
        return cls(kind, name)


def spec_digest(spec: Mapping[str, Any]) -> str:
    """A stable digest of a spec: the generation advances when this changes."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Manifest:
    """One accepted document of a manifest file."""

    kind: str
    name: str
    spec: Mapping[str, Any]
    source: str
    document: int
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(self.kind, self.name)

    @property
    def digest(self) -> str:
        return spec_digest(self.spec)


class RunStrategy(StrEnum):
    ALWAYS = "Always"
    HALTED = "Halted"
    MANUAL = "Manual"


class DeletionPolicy(StrEnum):
    DELETE = "Delete"
    ORPHAN = "Orphan"


@dataclass(frozen=True)
class Disk:
    path: str
    format: str = "qcow2"
    bus: str = "virtio"
    read_only: bool = False


@dataclass(frozen=True)
class DomainSpec:
    """The fields of a Domain that kvmrec compares with libvirt."""

    memory: int  # bytes
    type: str = "kvm"
    vcpus: int = 1
    run_strategy: RunStrategy = RunStrategy.ALWAYS
    autostart: bool = False
    console: str = "serial"
    disks: tuple[Disk, ...] = ()
    deletion_policy: DeletionPolicy = DeletionPolicy.DELETE

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> DomainSpec:
        """Build from a validated spec (schema defaults filled in)."""
        return cls(
            memory=quantities.parse_bytes(spec["memory"]),
            type=spec.get("type", "kvm"),
            vcpus=int(spec.get("vcpus", 1)),
            run_strategy=RunStrategy(spec.get("runStrategy", "Always")),
            autostart=bool(spec.get("autostart", False)),
            console=spec.get("console", "serial"),
            disks=tuple(
                Disk(
                    path=d["path"],
                    format=d.get("format", "qcow2"),
                    bus=d.get("bus", "virtio"),
                    read_only=bool(d.get("readOnly", False)),
                )
                for d in spec.get("disks", [])
            ),
            deletion_policy=DeletionPolicy(spec.get("deletionPolicy", "Delete")),
        )
