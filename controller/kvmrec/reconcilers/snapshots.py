"""Snapshots: the ``Snapshot`` kind, and taking one (for it, its policies and the CLI).

``Snapshot`` is one named snapshot of one domain that exists while its manifest exists
(``deletionPolicy: Retain`` keeps it after). Policies are reconcilers/snapshot_policy.py.

Snapshots are internal (inside the qcow2 images). Quiescing freezes the guest's file
systems through the QEMU guest agent for the instant of the snapshot: ``auto`` does it when
an agent answers, ``required`` fails (with a condition saying why) when none does, ``never``
does not try. Whether a snapshot was quiesced is recorded with it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from kvmrec.api.kinds import ObjectKey, SnapshotSpec
from kvmrec.backends import protocols
from kvmrec.backends.errors import BackendError, Unavailable
from kvmrec.backends.libvirt.live import LiveDomain
from kvmrec.backends.snapshot_state import SnapshotInfo
from kvmrec.engine.clock import Clock
from kvmrec.reconcilers.kind import Kind, Report, StepFailed, Turn
from kvmrec.reconcilers.plans import Plan, Step
from kvmrec.reconcilers.reconciling import Reconciler
from kvmrec.store.base import Store
from kvmrec.store.records import Drift, SnapshotRecord, StoredObject

POLICY_PREFIX = "kvmrec-"
WAIT_RETRY = 10.0  # a domain that is not there yet, an agent that does not answer yet


class SnapshotFailed(StepFailed):
    """A snapshot could not be taken for a reason the operator must see (no agent for a
    required quiesce, memory state of a running guest)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason, message, WAIT_RETRY)


def policy_snapshot_name(policy: str, at: datetime) -> str:
    return f"{POLICY_PREFIX}{policy}-{at.strftime('%Y%m%d-%H%M%S-%f')[:-3]}"


def is_policy_snapshot(policy: str, name: str) -> bool:
    return name.startswith(f"{POLICY_PREFIX}{policy}-")


def take(
    hv: protocols.SnapshotHost,
    domain: str,
    name: str,
    description: str,
    *,
    quiesce: str,
    memory: bool,
) -> bool:
    """Take one snapshot; returns whether the guest's file systems were frozen for it."""
    live = hv.get_domain(domain)
    if live is None:
        raise SnapshotFailed("DomainMissing", f"domain {domain} does not exist")
    running = live.active
    if running and not memory:
        raise SnapshotFailed(
            "MemoryStateRequired",
            f"{domain} is running: QEMU takes internal snapshots of a running guest only with "
            "its memory state (set memory: true, or stop the guest)",
        )
    frozen = False
    if running and quiesce != "never":
        try:
            hv.freeze(domain)
            frozen = True
        except Unavailable:
            raise
        except BackendError as exc:
            if quiesce == "required":
                raise SnapshotFailed(
                    "QuiesceFailed",
                    f"quiesce: required, but the guest agent of {domain} does not answer "
                    f"({exc}); is guestAgent on and qemu-ga running in the guest?",
                ) from exc
    try:
        hv.create_snapshot(domain, name, description)
    finally:
        if frozen:
            hv.thaw(domain)
    # A guest that is shut off has nothing in flight: its disks are as consistent as a
    # frozen guest's.
    return frozen or not running


@dataclass(frozen=True)
class SnapshotLive:
    """The domain a Snapshot is of, and its snapshots (newest first)."""

    domain: LiveDomain
    snapshots: tuple[SnapshotInfo, ...]

    def find(self, name: str) -> SnapshotInfo | None:
        return next((s for s in self.snapshots if s.name == name), None)


class Snapshot(Kind[SnapshotSpec, SnapshotLive]):
    """The Snapshot kind: no stamp of its own (the name is the manifest's)."""

    kind = "Snapshot"
    noun = "domain of snapshot"
    reasons: ClassVar[Mapping[str, str]] = {"snapshot": "Created"}

    def __init__(self, hypervisor: protocols.SnapshotHost, store: Store) -> None:
        self._hv = hypervisor
        self._ledger = store  # the snapshot ledger only

    def owned(self) -> bool:
        return False

    def parse(self, obj: StoredObject) -> SnapshotSpec:
        return SnapshotSpec.from_spec(obj.spec)

    def observe(self, obj: StoredObject, spec: SnapshotSpec) -> SnapshotLive | None:
        live = self._hv.get_domain(spec.domain)
        if live is None:
            return None
        return SnapshotLive(live, tuple(self._hv.list_snapshots(spec.domain)))

    def decide(self, turn: Turn[SnapshotSpec, SnapshotLive]) -> Plan:
        domain = turn.spec.domain
        if turn.live is None:
            return Plan(
                steps=(Step("wait", detail=f"domain {domain} does not exist"),),
                wait=WAIT_RETRY,
                wait_reason="WaitingForDependency",
                wait_message=f"waiting for domain {domain}",
            )
        if turn.live.find(turn.name) is not None:
            return Plan()
        return Plan(steps=(Step("snapshot", (Drift("spec.domain", domain, None),)),))

    def act(self, turn: Turn[SnapshotSpec, SnapshotLive], step: Step) -> str:
        spec, name = turn.spec, turn.name
        if step.action == "delete":
            self._hv.delete_snapshot(spec.domain, name)
            return f"deleted {name}"
        assert step.action == "snapshot" and turn.live is not None
        quiesced = take(
            self._hv,
            spec.domain,
            name,
            spec.description or f"kvmrec Snapshot/{name}",
            quiesce=spec.quiesce,
            memory=spec.memory,
        )
        running = turn.live.domain.active
        self._ledger.record_snapshot(
            SnapshotRecord(spec.domain, name, None, turn.now, quiesced, running)
        )
        return f"snapshot {name} of {spec.domain} taken{' (quiesced)' if quiesced else ''}"

    def report(self, turn: Turn[SnapshotSpec, SnapshotLive]) -> Report:
        spec, name = turn.spec, turn.name
        assert turn.live is not None
        record = next(
            (r for r in self._ledger.snapshots(domain=spec.domain) if r.name == name), None
        )
        taken = turn.live.find(name) or self._hv.get_snapshot(spec.domain, name)
        return Report(
            True,
            "Taken",
            details={
                "state": "taken",
                "domain": spec.domain,
                "quiesced": record.quiesced if record else None,
                # Why a revert to it cannot succeed (backends/snapshot_state.py), or None.
                "restoreProblem": taken.restore_problem,
            },
        )

    def deletion(self, turn: Turn[SnapshotSpec, SnapshotLive]) -> Plan:
        spec, name = turn.spec, turn.name
        if turn.live is not None and turn.live.find(name) is not None and not spec.keep:
            return Plan(steps=(Step("delete", detail=f"snapshot {name} of {spec.domain}"),))
        return Plan()

    def forget(self, turn: Turn[SnapshotSpec, SnapshotLive]) -> None:
        self._ledger.forget_snapshot(turn.spec.domain, turn.name)


class SnapshotReconciler(Reconciler[SnapshotSpec, SnapshotLive]):
    def __init__(
        self,
        store: Store,
        hypervisor: protocols.SnapshotHost,
        clock: Clock,
        *,
        on_step: Callable[[ObjectKey, Step], None] | None = None,
    ) -> None:
        super().__init__(Snapshot(hypervisor, store), store, clock, on_step=on_step)
