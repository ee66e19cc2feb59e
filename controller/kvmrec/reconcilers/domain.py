"""The Domain kind: make a libvirt guest match its manifest, and keep it so.

observe: the domain's persistent definition, the configuration the running guest has, its
run state (and why), its autostart flag; its disk images. decide: the ordered steps that
bring it to its manifest, each naming the fields it changes. act: one step at a time. The
generic layer (reconcilers/reconciling.py) runs them, so ``kvmrec plan`` prints what the
reconcile does. Where the rest lives:

- comparing, field by field, intent only: reconcilers/domain_diff.py;
- disk images, and which paths a manifest may name: reconcilers/domain_images.py;
- the cloud-init seed (made, rebuilt, deleted with the domain): reconcilers/seeds.py;
- installs from media (until the guest powers off, then installed): reconcilers/installs.py;
- the running guest (live changes, its clock, its addresses): reconcilers/domain_guest.py;
- what it is after acting (Ready, drift, restarts that needs): reconcilers/domain_report.py;
- deleting it, and its images: reconcilers/domain_deletion.py;
- what it remembers between reconciles, typed: reconcilers/domain_memory.py.

A differing field of a running guest is applied live where libvirt can and always written
to the definition; what the guest cannot take raises ``RestartRequired``, and with
``restartPolicy: Auto`` kvmrec restarts it. Run state follows ``runStrategy`` (KubeVirt's
meanings); restarts of a guest that keeps failing back off (reconcilers/crash_loop.py);
stopping, restarting and deleting power it off cleanly (reconcilers/stopping.py). While
libvirt runs a job of its own on the guest, it is left alone (reconcilers/libvirt_jobs.py);
how the last revert by hand ended is ``Reverted`` (reconcilers/reverts.py); a CPU the host
refuses is a condition (reconcilers/domain_cpu.py). Only domains with kvmrec's stamp are
touched, unless the manifest adopts one (reconcilers/adoption.py).

Fast resync (reconcilers/converged.py): after a reconcile that found nothing to do, the
domain's fingerprint is remembered; a periodic resync reconciles only those it moved.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from kvmrec.api.kinds import DeletionPolicy, DomainSpec, ObjectKey, RestartPolicy
from kvmrec.backends import domain_xml, images, protocols
from kvmrec.backends.domain_xml import Owner
from kvmrec.backends.errors import BackendError
from kvmrec.backends.libvirt.guest_agent import GuestAgent
from kvmrec.backends.libvirt.live import LiveDomain
from kvmrec.backends.seed_iso import SeedError
from kvmrec.engine.clock import Clock
from kvmrec.reconcilers import adoption, crash_loop, domain_cpu, libvirt_jobs, stopping
from kvmrec.reconcilers.converged import Converged
from kvmrec.reconcilers.dependencies import DEPENDENCY_RETRY, Dependencies, domain_refs
from kvmrec.reconcilers.disk_paths import DiskPolicy
from kvmrec.reconcilers.domain_deletion import DomainDeletion
from kvmrec.reconcilers.domain_diff import (
    diff_config,
    live_class,
    wants_running,
)
from kvmrec.reconcilers.domain_memory import DomainMemory
from kvmrec.reconcilers.domain_report import DomainReport
from kvmrec.reconcilers.kind import StampedKind, Turn
from kvmrec.reconcilers.plans import Plan, Step
from kvmrec.reconcilers.reconciling import Reconciler
from kvmrec.store.base import Store
from kvmrec.store.records import Drift, StoredObject

KIND = "Domain"

# What deletionPolicy Delete does to a domain.
_REMOVAL = "destroy and undefine"


def _owner(obj: StoredObject, live: LiveDomain | None) -> Owner:
    """The stamp the domain of ``obj`` gets; an adoption is kept in it."""
    taken = live is not None and adoption.adopted(live.config.owner, KIND, obj.key.name)
    return Owner(KIND, obj.key.name, obj.uid, obj.generation, obj.digest, adopted=taken)


_EVENT_REASONS = {
    "create-image": "ImageCreated",
    "build-seed": "SeedBuilt",
    "extract-installer": "InstallerCopied",
    "remove-installer": "InstallerRemoved",
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


class Domain(DomainReport, DomainDeletion, StampedKind[DomainSpec, LiveDomain]):
    """The Domain kind: its own parse, observe, decide, act and report."""

    kind = KIND
    noun = "domain"
    removal = _REMOVAL
    errors: ClassVar[tuple[type[Exception], ...]] = (BackendError, images.ImageError, SeedError)
    reasons: ClassVar[Mapping[str, str]] = _EVENT_REASONS
    quiet_waits: ClassVar[frozenset[str]] = frozenset({libvirt_jobs.WAIT_REASON})
    events = "domain"

    def __init__(
        self,
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
        self._hv = hypervisor
        self._guest = guest or GuestAgent(hypervisor)
        self._stopper = stopping.Stopper(hypervisor, self._guest, stop_grace)
        self._disks = None if disk_roots is None else DiskPolicy.of(disk_roots, allow_device_disks)
        self._converged = Converged()  # reconcilers/converged.py
        self._jobs = libvirt_jobs.Jobs(clock)

    # -- fast resync ---------------------------------------------------------------------

    def stale(self, keys: list[ObjectKey]) -> list[ObjectKey]:
        """The keys whose domains changed since they were last found converged."""
        return self._converged.stale(keys, self._hv.fingerprints())

    # -- observe -------------------------------------------------------------------------

    def parse(self, obj: StoredObject) -> DomainSpec:
        return self._with_seed(obj.key.name, DomainSpec.from_spec(obj.spec, obj.key.name))

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
        return [ref.managed for ref in domain_refs(self.parse(obj)) if ref.manageable]

    def prepare(self, turn: Turn[DomainSpec, LiveDomain]) -> None:
        self._converged.remember(turn.name, None)
        live = turn.live
        memory = DomainMemory.load(turn.status.details)
        kvmrec_stopped = memory.stopping is not None or memory.restarting
        if live is not None and not live.active and memory.stopping is not None:
            stopped, memory = stopping.finished(live, memory, turn.now)
            turn.events.append(("Normal", "Stopped", stopped))
            turn.status = replace(turn.status, details=memory.into(turn.status.details))
        turn.notes["memory"] = self._install_prepare(turn, memory, kvmrec_stopped)

    # -- decide --------------------------------------------------------------------------

    def decide(self, turn: Turn[DomainSpec, LiveDomain]) -> Plan:
        obj, spec, live, memory, now = turn.obj, turn.spec, turn.live, self._memory(turn), turn.now
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
        seed_steps, blocked = self._os_and_seed(name, spec)
        if blocked is not None:
            return blocked
        copy_installer, remove_installer, blocked = self._install_steps(turn, memory)
        if blocked is not None:
            return blocked
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
        steps: list[Step] = [*seed_steps, *copy_installer]
        # The installer's kernel is there once copied out, before the definition is written.
        unbooted = replace(spec, kernel=None, initrd=None) if copy_installer else spec
        image_steps, missing = self._image_steps(name, unbooted, live)
        steps += image_steps
        if missing:
            return Plan(steps=tuple(steps), blocked=missing, blocked_reason="ImageMissing")

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
        wait_message, wait_reason = "", "CrashLoopBackOff"
        state = live.state if live is not None else "undefined"
        active = live is not None and live.active
        if want is True and state == "paused":
            steps.append(Step("resume", (Drift("spec.runStrategy", spec.run_strategy, state),)))
        elif want is True and not active:
            backoff = crash_loop.wait(memory, now) or domain_cpu.held(
                spec, memory, obj.generation, now
            )
            if isinstance(backoff, domain_cpu.Held):
                wait_reason = domain_cpu.REASON
            if backoff is None:
                steps.append(
                    Step("start", (Drift("spec.runStrategy", spec.run_strategy.value, state),))
                )
            else:
                wait, wait_message = backoff.seconds, backoff.message
        elif want is False and active:
            steps.append(Step("stop", (Drift("spec.runStrategy", spec.run_strategy.value, state),)))
        steps += remove_installer
        if wait is not None:
            return Plan(
                steps=tuple(steps),
                wait=wait,
                wait_reason=wait_reason,
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
            case "build-seed":
                return self._build_seed(name, spec)
            case "extract-installer" | "remove-installer":
                return self._install_act(turn, step)
            case "grow-image":
                assert step.item is not None
                self._grow_image(name, spec, step.item, live)
                return f"grew image {spec.disks[step.item].source} to {step.fields[0].desired}"
            case "create" | "update":
                uuid = live.config.uuid if live is not None else None  # an adopted one's own
                if live is not None and spec.os_id is None:
                    # The OS another tool recorded stays, as long as the manifest names none.
                    spec = replace(spec, os_id=live.config.os_id)
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
                started = domain_cpu.start(self._hv, turn, memory)
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

    def done(self, turn: Turn[DomainSpec, LiveDomain]) -> None:
        fingerprint = turn.notes.get("fingerprint")
        # A seed's sources and the seed file are no part of libvirt's fingerprint: such a
        # domain is reconciled on every resync.
        if fingerprint is not None and turn.spec.seed is None:
            self._converged.remember(turn.name, fingerprint)

    def forget(self, turn: Turn[DomainSpec, LiveDomain]) -> None:
        self._converged.remember(turn.name, None)


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
