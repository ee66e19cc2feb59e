"""The Domain kind: make a libvirt guest match its manifest, and keep it so.

observe: the domain's persistent definition, the configuration the running guest has, its
run state (and why), its autostart flag; its disk images. decide: the ordered steps that
bring it to its manifest, each naming the fields it changes. act: one step at a time. The
generic layer (reconcilers/reconciling.py) runs them, so ``kvmrec plan`` prints what the
reconcile does. Where the rest lives:

- comparing, field by field, intent only: reconcilers/domain_diff.py;
- disk images, and which paths a manifest may name: reconcilers/domain_images.py;
- the running guest (live changes, its clock, its addresses): reconcilers/domain_guest.py.

A differing field of a running guest is applied live where libvirt can and always written
to the definition; what the guest cannot take raises ``RestartRequired``, and with
``restartPolicy: Auto`` kvmrec restarts it. Run state follows ``runStrategy`` (KubeVirt's
meanings); restarts of a guest that keeps failing back off (reconcilers/crash_loop.py);
stopping, restarting and deleting power it off cleanly (reconcilers/stopping.py). While
libvirt runs a job of its own on the guest, it is left alone (reconcilers/libvirt_jobs.py);
how the last revert by hand ended is ``Reverted`` (reconcilers/reverts.py). Only domains
with kvmrec's stamp are touched, unless the manifest adopts one (reconcilers/adoption.py).

Fast resync: after a reconcile that found nothing to do, the domain's fingerprint (its
definition, its live XML, paused and autostart) is remembered; a periodic resync
reconciles only the domains whose fingerprint moved.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from kvmrec.api.kinds import (
    DeletionPolicy,
    DomainSpec,
    ObjectKey,
    RestartPolicy,
    RunStrategy,
)
from kvmrec.backends import domain_xml, images, protocols
from kvmrec.backends.domain_xml import Owner
from kvmrec.backends.errors import BackendError
from kvmrec.backends.libvirt.guest_agent import GuestAgent
from kvmrec.backends.libvirt.live import Fingerprint, LiveDomain
from kvmrec.engine.clock import Clock
from kvmrec.reconcilers import adoption, crash_loop, libvirt_jobs, recording, reverts, stopping
from kvmrec.reconcilers.dependencies import DEPENDENCY_RETRY, Dependencies, domain_refs
from kvmrec.reconcilers.disk_paths import DiskPolicy
from kvmrec.reconcilers.domain_diff import (
    diff_config,
    drift_key,
    live_class,
    state_of,
    wants_running,
)
from kvmrec.reconcilers.domain_guest import GuestSide
from kvmrec.reconcilers.domain_images import DiskImages
from kvmrec.reconcilers.domain_memory import DomainMemory
from kvmrec.reconcilers.kind import Report, StampedKind, Turn
from kvmrec.reconcilers.plans import Plan, Step
from kvmrec.reconcilers.reconciling import Reconciler
from kvmrec.store.base import Store
from kvmrec.store.records import Drift, Status, StoredObject

log = logging.getLogger(__name__)

KIND = "Domain"


# -- the reconciler ---------------------------------------------------------------------------


# What deletionPolicy Delete does to a domain.
_REMOVAL = "destroy and undefine"


def _owner(obj: StoredObject, live: LiveDomain | None) -> Owner:
    """The stamp the domain of ``obj`` gets; an adoption is kept in it."""
    taken = live is not None and adoption.adopted(live.config.owner, KIND, obj.key.name)
    return Owner(KIND, obj.key.name, obj.uid, obj.generation, obj.digest, adopted=taken)


_EVENT_REASONS = {
    "create-image": "ImageCreated",
    "grow-image": "ImageGrown",
    "create": "Created",
    "update": "Redefined",
    "adopt": "Adopted",
    "stamp": "Stamped",
    "update-live": "UpdatedLive",
    "update-at-restart": "RestartRequired",
    "restart": "Restarted",
    "autostart": "Autostart",
    "resume": "Resumed",
    "start": "Started",
    "stop": "Stopped",
    "gone": "Deleted",
}


class Domain(StampedKind[DomainSpec, LiveDomain], DiskImages, GuestSide):
    """The Domain kind: its own parse, observe, decide, act and report."""

    kind = KIND
    noun = "domain"
    removal = _REMOVAL
    errors: ClassVar[tuple[type[Exception], ...]] = (BackendError, images.ImageError)
    reasons: ClassVar[Mapping[str, str]] = _EVENT_REASONS
    quiet_waits: ClassVar[frozenset[str]] = frozenset({libvirt_jobs.WAIT_REASON})
    events = "domain"

    def __init__(
        self,
        store: Store,
        hypervisor: protocols.DomainHost,
        clock: Clock,
        dependencies: Dependencies | None = None,
        *,
        disk_roots: Iterable[str | Path] | None = None,
        allow_device_disks: bool = False,
        guest: protocols.GuestAgent | None = None,
        stop_grace: float = 60.0,
    ) -> None:
        """``disk_roots``: where disk images may be (see reconcilers/disk_paths.py); None
        places no restriction, for tests that make images anywhere. The service always
        passes its settings' roots. ``stop_grace``: seconds a guest asked to power off gets
        before it is destroyed, unless its spec says otherwise."""
        super().__init__(dependencies)
        self._store = store  # read only: the Reverted condition (reconcilers/reverts.py)
        self._hv = hypervisor
        self._guest = guest or GuestAgent(hypervisor)
        self._stopper = stopping.Stopper(hypervisor, self._guest, stop_grace)
        self._disks = None if disk_roots is None else DiskPolicy.of(disk_roots, allow_device_disks)
        self._lock = threading.Lock()
        self._converged: dict[str, Fingerprint] = {}
        self._jobs = libvirt_jobs.Jobs(clock)

    # -- fast resync ---------------------------------------------------------------------

    def stale(self, keys: list[ObjectKey]) -> list[ObjectKey]:
        """The keys whose domains changed since they were last found converged."""
        fingerprints = self._hv.fingerprints()
        with self._lock:
            converged = dict(self._converged)
        return [
            key
            for key in keys
            if key.name not in converged or fingerprints.get(key.name) != converged[key.name]
        ]

    def _remember(self, name: str, fingerprint: Fingerprint | None) -> None:
        with self._lock:
            if fingerprint is None:
                self._converged.pop(name, None)
            else:
                self._converged[name] = fingerprint

    # -- observe -------------------------------------------------------------------------

    def parse(self, obj: StoredObject) -> DomainSpec:
        return DomainSpec.from_spec(obj.spec, obj.key.name)

    def observe(self, obj: StoredObject, spec: DomainSpec) -> LiveDomain | None:
        return self._hv.get_domain(obj.key.name)

    def stamped(self, turn: Turn[DomainSpec, LiveDomain]) -> bool:
        live = turn.live
        return live is not None and adoption.stamped_for(live.config.owner, KIND, turn.name)

    def adopted(self, turn: Turn[DomainSpec, LiveDomain]) -> bool:
        owner = turn.live.config.owner if turn.live is not None else None
        return owner is not None and owner.adopted

    def deletion_policy(self, spec: DomainSpec) -> DeletionPolicy:
        return spec.deletion_policy

    def holders(self, key: ObjectKey) -> list[ObjectKey]:
        return []  # nothing waits for a domain to stay

    def woken_by_deletion(self, obj: StoredObject) -> list[ObjectKey]:
        # A deletion of a network or bridge it used, held while it was there, may go on.
        return [ref.managed for ref in domain_refs(self.parse(obj))]

    def prepare(self, turn: Turn[DomainSpec, LiveDomain]) -> None:
        self._remember(turn.name, None)
        live = turn.live
        memory = DomainMemory.load(turn.status.details)
        if live is not None and not live.active and memory.stopping is not None:
            stopped, memory = stopping.finished(live, memory, turn.now)
            turn.events.append(("Normal", "Stopped", stopped))
            turn.status = replace(turn.status, details=memory.into(turn.status.details))
        turn.notes["memory"] = memory

    @staticmethod
    def _memory(turn: Turn[DomainSpec, LiveDomain]) -> DomainMemory:
        """What the domain remembers, as this turn has it so far."""
        memory = turn.notes.get("memory")
        return (
            memory if isinstance(memory, DomainMemory) else DomainMemory.load(turn.status.details)
        )

    # -- decide --------------------------------------------------------------------------

    def decide(self, turn: Turn[DomainSpec, LiveDomain]) -> Plan:
        return self._decide(turn.obj, turn.spec, turn.live, self._memory(turn), turn.now)

    def _decide(
        self,
        obj: StoredObject,
        spec: DomainSpec,
        live: LiveDomain | None,
        memory: DomainMemory,
        now: datetime,
    ) -> Plan:
        name = obj.key.name
        waiting = self._jobs.plan(name, live) if live is not None else None
        if waiting is not None:
            return waiting
        if not self._hv.domain_type_supported(spec.type):
            return Plan(
                blocked=f"this host cannot run domain type {spec.type!r} (spec.type)",
                blocked_reason="Unsupported",
            )
        refused = self._refused_disk_paths(spec)
        if refused:
            return Plan(blocked=refused, blocked_reason="DiskPathNotAllowed")
        want = wants_running(spec, live, memory, obj.generation)
        if want and (live is None or not live.active) and self._deps is not None:
            unmet = self._deps.unmet(domain_refs(spec))
            if unmet:
                message = "waiting for " + "; ".join(unmet)
                return Plan(
                    steps=(Step("wait", detail=message),),
                    wait=DEPENDENCY_RETRY,
                    wait_reason="WaitingForDependency",
                    wait_message=message,
                )
        steps: list[Step] = []
        image_steps, missing = self._image_steps(name, spec, live)
        if missing:
            return Plan(steps=tuple(image_steps), blocked=missing, blocked_reason="ImageMissing")
        steps += image_steps

        owner = _owner(obj, live)
        if live is None:
            steps.append(Step("create", detail=f"define domain {name}"))
        else:
            adopting = not adoption.stamped_for(live.config.owner, KIND, name)
            if adopting:
                steps.append(adoption.step("domain", name, _REMOVAL, spec.deletion_policy))
            drift = diff_config(spec, live.config)
            if drift:
                steps.append(Step("update", tuple(drift), "write the persistent definition"))
            elif not adopting and live.config.owner != owner:
                steps.append(Step("stamp", visible=False))

        restart: list[Drift] = []
        if live is not None and live.running is not None:
            hot, restart = live_class(spec, live.running)
            if hot:
                steps.append(Step("update-live", tuple(hot), "apply to the running guest"))
            if restart and spec.restart_policy is RestartPolicy.AUTO:
                steps.append(Step("restart", tuple(restart), "restartPolicy: Auto"))
            elif restart:
                steps.append(Step("update-at-restart", tuple(restart), "RestartRequired"))

        autostart = live.autostart if live is not None else False
        if autostart != spec.autostart:
            steps.append(Step("autostart", (Drift("spec.autostart", spec.autostart, autostart),)))

        wait: float | None = None
        wait_message = ""
        state = live.state if live is not None else "undefined"
        active = live is not None and live.active
        if want is True and state == "paused":
            steps.append(Step("resume", (Drift("spec.runStrategy", spec.run_strategy, state),)))
        elif want is True and not active:
            backoff = crash_loop.wait(memory, now)
            if backoff is None:
                steps.append(
                    Step("start", (Drift("spec.runStrategy", spec.run_strategy.value, state),))
                )
            else:
                wait, wait_message = backoff.seconds, backoff.message
        elif want is False and active:
            steps.append(Step("stop", (Drift("spec.runStrategy", spec.run_strategy.value, state),)))
        if wait is not None:
            return Plan(
                steps=tuple(steps),
                wait=wait,
                wait_reason="CrashLoopBackOff",
                wait_message=wait_message,
            )
        return Plan(steps=tuple(steps))

    # -- act -----------------------------------------------------------------------------

    def act(self, turn: Turn[DomainSpec, LiveDomain], step: Step) -> str:
        """Carry out one step; returns the event message."""
        name, spec, live, now = turn.name, turn.spec, turn.live, turn.now
        memory = self._memory(turn)
        owner = _owner(turn.obj, live)
        fields = ", ".join(d.field for d in step.fields)
        match step.action:
            case "create-image":
                assert step.item is not None
                self._create_image(spec.disks[step.item])
                return f"created image {step.detail}"
            case "grow-image":
                assert step.item is not None
                self._grow_image(name, spec, step.item, live)
                return f"grew image {spec.disks[step.item].source} to {step.fields[0].desired}"
            case "create" | "update":
                uuid = live.config.uuid if live is not None else None  # an adopted one's own
                self._hv.define_domain(domain_xml.build(name, spec, owner, uuid=uuid))
                return step.detail if step.action == "create" else f"redefined: {fields}"
            case "adopt" | "stamp":
                self._hv.set_owner(name, owner)
                if step.action == "stamp":
                    return ""
                return adoption.adopted_event("domain", name, spec.deletion_policy)
            case "update-live":
                assert live is not None and live.running is not None
                refused = self._apply_live(name, spec, live.running, step)
                applied = [d.field for d in step.fields if d.field not in refused]
                if not applied:
                    return ""
                return f"applied to the running guest: {', '.join(applied)}"
            case "update-at-restart":
                return ""
            case "restart":
                assert live is not None
                if memory.stopping is not None:
                    said, turn.notes["memory"] = self._stopper.step(
                        name, spec, live, memory, now, "restart"
                    )
                    return said
                message, turn.notes["memory"] = self._restart(name, spec, live, memory, now)
                return f"{message} to apply {fields} (restartPolicy: Auto)"
            case "autostart":
                self._hv.set_autostart(name, spec.autostart)
                return f"autostart {step.fields[0].actual} -> {spec.autostart}"
            case "resume":
                self._hv.resume_domain(name)
                return "resumed the paused guest" + self._sync_clock(name, spec)
            case "start":
                turn.notes["memory"] = self._note_start(memory, now)
                started = self._hv.start_domain(name)
                was = live.state if live is not None else "new"
                reason = f", {live.reason}" if live is not None and live.state == "shutoff" else ""
                if not started:
                    return f"the guest was running again before kvmrec started it ({was}{reason})"
                return f"started the guest (it was {was}{reason})"
            case "stop":
                assert live is not None
                said, turn.notes["memory"] = self._stopper.step(
                    name, spec, live, memory, now, "halt"
                )
                return said
            case "gone":
                return f"domain {name} is gone"
            case "orphan":
                self._hv.set_owner(name, None)
                return f"removed kvmrec's stamp from {name}; left as it is"
            case "delete":
                return self._undefine(turn)
        raise AssertionError(f"unknown step {step.action}")

    # -- stopping and restarting ---------------------------------------------------------

    def _restart(
        self, name: str, spec: DomainSpec, live: LiveDomain, memory: DomainMemory, now: datetime
    ) -> tuple[str, DomainMemory]:
        """Restart the guest to apply what it cannot take live: a clean power off as for a
        stop, and a start once it is off (at once when the grace period is 0)."""
        memory = replace(memory, restart_for=tuple(drift_key(self._still_different(spec, live))))
        message, memory = self._stopper.step(name, spec, live, memory, now, "restart")
        if memory.stopping is not None:
            return message or "restarting the guest", memory
        memory = replace(self._note_start(memory, now), restarting=False)
        self._hv.start_domain(name)
        return "restarted the guest", memory

    @staticmethod
    def _note_start(memory: DomainMemory, now: datetime) -> DomainMemory:
        memory = crash_loop.note_start(memory, now)
        return replace(memory, guest=replace(memory.guest, reads=None))

    @staticmethod
    def _still_different(spec: DomainSpec, live: LiveDomain) -> list[Drift]:
        """What the running guest has that differs from the spec, after acting."""
        if live.running is None:
            return []
        hot, restart = live_class(spec, live.running)
        return restart + hot

    # -- report --------------------------------------------------------------------------

    def report(self, turn: Turn[DomainSpec, LiveDomain]) -> Report:
        """What the guest is after acting; restarts it when the running guest refused what
        it could not take live and ``restartPolicy: Auto`` asks for one."""
        obj, spec, name, now, plan = turn.obj, turn.spec, turn.name, turn.now, turn.plan
        status, events = turn.status, turn.events
        memory = self._memory(turn)
        live = turn.live
        assert live is not None
        if not any(step.action in ("stop", "restart") for step in plan.steps):
            memory = replace(memory, stopping=None)  # called off: the manifest wants it running
        if live.state == "running" and spec.run_strategy is RunStrategy.ONCE:
            memory = replace(memory, once_generation=obj.generation)
        if live.state == "running" and memory.stopping is None:
            memory = replace(memory, restarting=False)
        # A resume kvmrec did not do (the operator's, under runStrategy Manual) leaves the
        # clock as far behind as one of its own.
        resumed = status.details.get("state") == "paused" and live.state == "running"
        if spec.sync_clock and resumed and "resume" not in {s.action for s in plan.steps}:
            synced = self._sync_clock(name, spec)
            events.append(("Normal", "ClockSynced", f"resumed by hand{synced}"))

        restart = self._still_different(spec, live)
        seen = tuple(drift_key(restart))
        auto = spec.restart_policy is RestartPolicy.AUTO and live.running is not None
        # What the running guest refused to take live needs a restart too; but a difference
        # that a restart already failed to fix (a balloon the guest ignores) is not a reason
        # to restart it again and again.
        if restart and auto and memory.stopping is None:
            if memory.restart_for == seen:
                memory = replace(memory, restart_did_not_fix=seen)
            elif memory.restart_did_not_fix != seen:
                fields = ", ".join(d.field for d in restart)
                message, memory = self._restart(name, spec, live, memory, now)
                events.append(("Normal", "Restarted", f"{message} to apply {fields}"))
                again = self._hv.get_domain(name)
                if again is None:
                    raise BackendError(f"domain {name} vanished while it was being restarted")
                live = turn.live = again
                restart = self._still_different(spec, live)
        if not restart:
            memory = replace(memory, restart_did_not_fix=None, restart_for=None)
        drift = diff_config(spec, live.config)
        drift += [d for d in restart if d.field not in {x.field for x in drift}]
        if live.autostart != spec.autostart:
            drift.append(Drift("spec.autostart", spec.autostart, live.autostart))
        want = wants_running(spec, live, memory, obj.generation)
        off_course = (want is True and live.state != "running") or (want is False and live.active)
        if off_course and plan.wait is None:
            drift.append(Drift("spec.runStrategy", spec.run_strategy.value, live.state))

        wait = plan.wait
        if plan.wait_reason == "CrashLoopBackOff":
            memory = crash_loop.note_failure(memory, now)  # the wait counts from the first sight
        if memory.stopping is not None:
            wait = self._stopper.next_step_in(spec, memory.stopping, now)
        guest_wait, memory = self._read_guest(name, spec, live, memory)
        if guest_wait is not None:
            wait = guest_wait if wait is None else min(wait, guest_wait)

        ready, reason, message, conditions = self._ready(
            spec, live, memory, restart, plan, obj, status
        )
        if memory.stopping is not None:
            message = self._stopper.describe(spec, memory.stopping, now)
            ready, reason = False, "Stopping"
        turn.notes["memory"] = memory
        # A guest whose addresses are reported is read again on every resync, whatever its
        # fingerprint: a new DHCP address moves nothing libvirt shows.
        quiet = not plan.steps and not drift and wait is None and memory.guest.info is None
        turn.notes["fingerprint"] = live.fingerprint if quiet else None
        return Report(
            ready,
            reason,
            message,
            drift=tuple(drift),
            details={
                **memory.into(status.details),
                "state": live.state,
                "reason": live.reason,
                "uuid": live.config.uuid,
            },
            requeue_after=wait,
            conditions=conditions,
        )

    def finish(self, turn: Turn[DomainSpec, LiveDomain], status: Status) -> Status:
        # ``kvmrec snapshot revert`` writes the Reverted condition while the service runs.
        return reverts.carried(self._store, turn.obj.key, status)

    def done(self, turn: Turn[DomainSpec, LiveDomain]) -> None:
        fingerprint = turn.notes.get("fingerprint")
        if fingerprint is not None:
            self._remember(turn.name, fingerprint)

    # -- status --------------------------------------------------------------------------

    @staticmethod
    def _ready(
        spec: DomainSpec,
        live: LiveDomain,
        memory: DomainMemory,
        restart: list[Drift],
        plan: Plan,
        obj: StoredObject,
        status: Status,
    ) -> tuple[bool, str, str, tuple[tuple[str, str, str, str], ...]]:
        """``Ready`` (whether, why, what it says) and ``RestartRequired``."""
        want = wants_running(spec, live, memory, obj.generation)
        if plan.wait is not None:
            ready, reason, message = False, "CrashLoopBackOff", plan.wait_message
        elif want is True:
            ready = live.state == "running"
            reason, message = ("Running", "") if ready else ("NotRunning", state_of(live))
        elif want is False:
            ready = not live.active
            if spec.run_strategy is RunStrategy.RERUN_ON_FAILURE:
                reason = "Completed" if ready else "StillRunning"
            else:
                reason = "Halted" if ready else "StillRunning"
            message = "" if ready else state_of(live)
        else:
            ready = True
            reason = "Running" if live.state == "running" else "Defined"
            message = ""
        conditions: tuple[tuple[str, str, str, str], ...] = ()
        if restart:
            fields = ", ".join(d.field for d in restart)
            picks_up = f"the running guest picks up {fields} at its next restart"
            conditions = (("RestartRequired", "True", "DefinitionChanged", picks_up),)
        elif status.condition("RestartRequired") is not None:
            conditions = (("RestartRequired", "False", "UpToDate", ""),)
        return ready, reason, message, conditions

    # -- deletion ------------------------------------------------------------------------

    def deletion(self, turn: Turn[DomainSpec, LiveDomain]) -> Plan | None:
        if turn.live is None:
            return Plan(steps=(Step("gone", visible=False),))
        return None  # by its stamp and deletionPolicy

    def delete_detail(self, turn: Turn[DomainSpec, LiveDomain], detail: str) -> str:
        doomed = [d.source for d in turn.spec.disks if self._deletable(d)]
        return detail + (f"; delete {', '.join(doomed)}" if doomed else "")

    def held(self, turn: Turn[DomainSpec, LiveDomain], plan: Plan) -> tuple[Status, float] | None:
        """A guest to delete is powered off first, cleanly (reconcilers/stopping.py)."""
        live, spec, name, now = turn.live, turn.spec, turn.name, turn.now
        turn.notes["stopped"] = ""
        if live is None or not plan.steps or plan.steps[0].action != "delete":
            return None
        memory = DomainMemory.load(turn.status.details)
        if live.active:
            message, memory = self._stopper.step(name, spec, live, memory, now, "delete")
            if memory.stopping is not None:
                # Not off yet: the guest's STOPPED event or the next step brings us back.
                if message:
                    turn.events.append(("Normal", "Stopping", message))
                status = recording.deletion_held(
                    replace(turn.status, details=memory.into(turn.status.details)),
                    "Stopping",
                    "powering the guest off before deleting it",
                    now,
                )
                return status, self._stopper.next_step_in(spec, memory.stopping, now)
            turn.notes["stopped"] = f"; {message}"
        elif memory.stopping is not None:
            turn.notes["stopped"] = f"; {stopping.finished(live, memory, now)[0]}"
        return None

    def _undefine(self, turn: Turn[DomainSpec, LiveDomain]) -> str:
        key, name, spec, live = turn.obj.key, turn.name, turn.spec, turn.live
        assert live is not None
        self._hv.undefine_domain(name)
        removed = []
        for disk in spec.disks:
            if not self._deletable(disk):
                if disk.delete_image and disk.path and self._disks is not None:
                    log.warning("%s: image kept: %s", key, self._disks.problem(disk.path))
                continue
            if disk.path:
                images.delete(disk.path)
            else:
                self._hv.delete_volume(disk.pool or "", disk.volume or "")
            removed.append(disk.source)
        kept = "; deleted images " + ", ".join(removed) if removed else " (disk images kept)"
        what = f"domain {name}"
        if self.adopted(turn):
            what += ", which kvmrec adopted and did not create"
        return f"undefined {what}{turn.notes.get('stopped', '')}{kept}"

    def forget(self, turn: Turn[DomainSpec, LiveDomain]) -> None:
        self._remember(turn.name, None)


class DomainReconciler(Reconciler[DomainSpec, LiveDomain]):
    def __init__(
        self,
        store: Store,
        hypervisor: protocols.DomainHost,
        clock: Clock,
        dependencies: Dependencies | None = None,
        *,
        disk_roots: Iterable[str | Path] | None = None,
        allow_device_disks: bool = False,
        guest: protocols.GuestAgent | None = None,
        stop_grace: float = 60.0,
        on_step: Callable[[ObjectKey, Step], None] | None = None,
    ) -> None:
        self.domains = Domain(
            store,
            hypervisor,
            clock,
            dependencies,
            disk_roots=disk_roots,
            allow_device_disks=allow_device_disks,
            guest=guest,
            stop_grace=stop_grace,
        )
        super().__init__(self.domains, store, clock, on_step=on_step)

    def stale(self, keys: Iterable[ObjectKey]) -> list[ObjectKey]:
        """The keys whose domains changed since they were last found converged."""
        return self.domains.stale(list(keys))
