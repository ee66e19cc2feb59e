"""The Domain reconciler: make a libvirt guest match its manifest, and keep it so.

observe: the stored desired state; the domain's persistent definition, the configuration
the running guest has, its run state (and why), its autostart flag; its disk images.
decide: a ``Plan``, the ordered steps that would bring the domain to its manifest, each
naming the fields it changes. act: carry the steps out. ``kvmrec plan`` stops after decide,
so the dry run and the real thing can never disagree.

Comparisons cover only the fields a manifest holds (intent only): both sides are parsed
into the same model, so controllers, PCI addresses, aliases and the MACs of interfaces
kvmrec did not add never count as drift.

Change classes. A differing field of a running guest is applied live where libvirt can
(vCPUs up to maxVcpus, memory up to maxMemory with a balloon, interfaces hot-plugged),
and always written to the persistent definition. Whatever the running guest cannot take
raises ``RestartRequired`` naming the fields; with ``restartPolicy: Auto`` kvmrec restarts
the guest itself.

libvirt's own jobs. While libvirt takes a snapshot of the guest, reverts it, saves, dumps or
migrates it, the guest is libvirt's: a pause for such a job is not drift and is never
resumed; the domain is looked at again when the job is over (reconcilers/libvirt_jobs.py).
How the last revert by hand ended is the ``Reverted`` condition (reconcilers/reverts.py).

Run state follows ``runStrategy`` with KubeVirt's meanings. Restarts of a guest that keeps
failing soon after it starts back off (at once, then 1 s, 4 s, 9 s, ... up to 5 min;
reconcilers/crash_loop.py), and say so in ``Ready`` (CrashLoopBackOff). Stopping a guest (and
restarting one, and deleting one) powers it off cleanly: guest agent, ACPI, then destroy
after the grace period (reconcilers/stopping.py).

The guest's side. For a running guest with the agent, or with a NIC on a libvirt network,
the status holds what the guest is (addresses, host name, OS: the agent first, DHCP leases
as a fallback), read again every second while it boots until it is complete, and on every
resync after that. With
``syncClock`` the guest clock is set after a resume, kvmrec's own or the operator's.

Ownership. kvmrec only touches domains that carry its stamp in ``<metadata>``; a domain of
the same name without it is a conflict, reported and left alone, unless the manifest asks
to adopt it (``kvmrec.io/adopt: "true"``, reconcilers/adoption.py).

Disk paths. Every path a Domain names must be a file under the configured disk roots
(reconcilers/disk_paths.py); one that is not blocks the whole plan (``DiskPathNotAllowed``):
nothing is created or defined, as with a missing image. An image outside the roots is never
deleted either, whatever its deletionPolicy says.

Fast resync: after a reconcile that found nothing to do, the domain's fingerprint (its
definition, its live XML, paused and autostart) is remembered. A periodic resync lists all
domains once and reconciles only those whose fingerprint moved.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from kvmrec.api import quantities
from kvmrec.api.kinds import (
    DeletionPolicy,
    Disk,
    DomainSpec,
    Interface,
    ObjectKey,
    RestartPolicy,
    RunStrategy,
)
from kvmrec.backends import domain_xml, images
from kvmrec.backends.domain_xml import DomainConfig, Owner
from kvmrec.backends.guest_agent import GuestAgent
from kvmrec.backends.hypervisor import (
    BackendError,
    Fingerprint,
    Hypervisor,
    LiveDomain,
    Unavailable,
)
from kvmrec.engine.clock import Clock
from kvmrec.reconcilers import adoption, crash_loop, libvirt_jobs, recording, reverts, stopping
from kvmrec.reconcilers.dependencies import DEPENDENCY_RETRY, Dependencies, domain_refs
from kvmrec.reconcilers.disk_paths import DiskPolicy
from kvmrec.reconcilers.plans import Plan, Step
from kvmrec.reconcilers.reconciling import Reconciler, Report, StampedKind, Turn
from kvmrec.store.base import Store
from kvmrec.store.records import Drift, Status, StoredObject

log = logging.getLogger(__name__)

KIND = "Domain"

# Guest information (addresses, host name, OS) is read again while it is incomplete (the
# agent not up yet, no address yet): every second for the first half minute of a boot, then
# every 5 s, for about five minutes in all; after that the periodic resync reads it.
GUEST_INFO_RETRY = 1.0
GUEST_INFO_RETRY_LATER = 5.0
GUEST_INFO_FAST_TRIES = 30
GUEST_INFO_TRIES = 90


# -- comparing ------------------------------------------------------------------------------


def _mem(nbytes: int) -> str:
    return quantities.format_bytes(nbytes)


def _by_bus(disks: Iterable[Disk]) -> tuple[Disk, ...]:
    # libvirt keeps a domain's disks grouped by bus; only the order within a bus matters.
    return tuple(sorted(disks, key=lambda d: d.bus))


def _disk_view(disks: Iterable[Disk]) -> list[dict[str, Any]]:
    view = []
    for d in disks:
        item: dict[str, Any] = {"path": d.path} if d.path else {"pool": d.pool, "volume": d.volume}
        item.update(format=d.format, bus=d.bus, device=d.device, readOnly=d.read_only)
        view.append(item)
    return view


def _iface_key(i: Interface) -> tuple[str, str | None, str | None, str | None, str]:
    return (i.mac, i.network, i.bridge, i.virtualport, i.model)


def _iface_view(ifaces: Iterable[Interface]) -> list[dict[str, Any]]:
    view = []
    for i in ifaces:
        item: dict[str, Any] = {"mac": i.mac}
        if i.name:
            item["name"] = i.name
        item.update({"network": i.network} if i.network else {"bridge": i.bridge})
        if i.virtualport:
            item["virtualport"] = i.virtualport
        item["model"] = i.model
        view.append(item)
    return view


def diff_config(spec: DomainSpec, config: DomainConfig) -> list[Drift]:
    """Fields of a definition that differ from the spec, named as in the manifest."""
    drift: list[Drift] = []

    def check(field: str, desired: Any, actual: Any) -> None:
        if desired != actual:
            drift.append(Drift(field, desired, actual))

    check("spec.type", spec.type, config.type)
    check("spec.vcpus", spec.vcpus, config.vcpus)
    check("spec.maxVcpus", spec.vcpus_max, config.vcpus_max)
    if quantities.to_kib(spec.memory) * 1024 != config.memory:
        drift.append(Drift("spec.memory", _mem(spec.memory), _mem(config.memory)))
    if quantities.to_kib(spec.memory_max) * 1024 != config.memory_max:
        drift.append(Drift("spec.maxMemory", _mem(spec.memory_max), _mem(config.memory_max)))
    check("spec.console", spec.console, config.console)
    if spec.graphics != config.graphics:
        desired = {"type": spec.graphics.type}
        actual = {"type": config.graphics.type}
        if spec.graphics.type == "vnc":
            desired["listen"] = spec.graphics.listen
        if config.graphics.type == "vnc":
            actual["listen"] = config.graphics.listen
        check("spec.graphics", desired, actual)
    check("spec.guestAgent", spec.guest_agent, config.guest_agent)
    check("spec.os.firmware", spec.firmware, config.firmware)
    check("spec.os.boot", list(spec.boot), list(config.boot))
    check("spec.os.kernel", spec.kernel, config.kernel)
    check("spec.os.initrd", spec.initrd, config.initrd)
    check("spec.os.cmdline", spec.cmdline, config.cmdline)
    wanted = _by_bus(d.attachment() for d in spec.disks)
    if wanted != _by_bus(config.disks):
        drift.append(Drift("spec.disks", _disk_view(wanted), _disk_view(_by_bus(config.disks))))
    if [_iface_key(i) for i in spec.interfaces] != [_iface_key(i) for i in config.interfaces]:
        drift.append(
            Drift("spec.interfaces", _iface_view(spec.interfaces), _iface_view(config.interfaces))
        )
    return drift


def _live_class(spec: DomainSpec, running: DomainConfig) -> tuple[list[Drift], list[Drift]]:
    """Split the differences of a running guest into (applied live, needs a restart)."""
    hot = {
        "spec.vcpus": spec.vcpus <= running.vcpus_max,
        "spec.memory": running.balloon and spec.memory <= running.memory_max,
        # Hot-plug; an unplug that the guest refuses shows up again and needs a restart.
        "spec.interfaces": True,
    }
    live: list[Drift] = []
    restart: list[Drift] = []
    for d in diff_config(spec, running):
        (live if hot.get(d.field, False) else restart).append(d)
    return live, restart


def _state_of(live: LiveDomain) -> str:
    return f"it is {live.state} ({live.reason})"


def _state_details(live: LiveDomain) -> dict[str, Any]:
    return {"state": live.state, "reason": live.reason, "uuid": live.config.uuid}


def _drift_key(drift: Iterable[Drift]) -> list[str]:
    return sorted(f"{d.field}={d.actual!r}" for d in drift)


def _wants_running(
    spec: DomainSpec, live: LiveDomain | None, status: Status, generation: int
) -> bool | None:
    """True: keep it running; False: keep it off; None: leave the run state alone."""
    if status.details.get("restarting"):
        return True  # powered off by kvmrec to apply a change: it comes back whatever the strategy
    strategy = spec.run_strategy
    if strategy is RunStrategy.ALWAYS:
        return True
    if strategy is RunStrategy.HALTED:
        return False
    if strategy is RunStrategy.RERUN_ON_FAILURE:
        # A guest that shut itself down has finished; anything else stopping it is a failure.
        return not (live is not None and live.state == "shutoff" and live.reason == "shutdown")
    if strategy is RunStrategy.ONCE:
        return None if status.details.get("onceGeneration") == generation else True
    return None


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


class Domain(StampedKind[DomainSpec, LiveDomain]):
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
        hypervisor: Hypervisor,
        clock: Clock,
        dependencies: Dependencies | None = None,
        *,
        disk_roots: Iterable[str | Path] | None = None,
        allow_device_disks: bool = False,
        guest: GuestAgent | None = None,
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
        details = dict(turn.status.details)
        turn.notes["details"] = details
        if live is not None and not live.active and "stopping" in details:
            stopped = stopping.finished(live, details, turn.now)
            turn.events.append(("Normal", "Stopped", stopped))
            turn.status = replace(turn.status, details=details)

    # -- decide --------------------------------------------------------------------------

    def decide(self, turn: Turn[DomainSpec, LiveDomain]) -> Plan:
        return self._decide(turn.obj, turn.spec, turn.live, turn.status, turn.now)

    def _decide(
        self,
        obj: StoredObject,
        spec: DomainSpec,
        live: LiveDomain | None,
        status: Status,
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
        want = _wants_running(spec, live, status, obj.generation)
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
            hot, restart = _live_class(spec, live.running)
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
            backoff = crash_loop.wait(status.details, now)
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

    def _refused_disk_paths(self, spec: DomainSpec) -> str | None:
        """Every path of ``spec`` that may not be used as a disk, field by field."""
        policy = self._disks
        if policy is None:
            return None
        problems: list[str] = []

        def check(field: str, path: str | None) -> None:
            problem = policy.problem(path) if path else None
            if problem:
                problems.append(f"{field}: {problem}")

        check("spec.os.kernel", spec.kernel)
        check("spec.os.initrd", spec.initrd)
        for index, disk in enumerate(spec.disks):
            field = f"spec.disks[{index}]"
            check(f"{field}.path", disk.path)
            check(f"{field}.backingImage", disk.backing_image)
            clone = disk.clone_from
            if clone is not None and clone.path:
                check(f"{field}.cloneFrom.path", clone.path)
            elif clone is not None and disk.path and not images.exists(disk.path):
                # The copy reads whatever that domain's disk is: the same rule applies.
                source = self._clone_source(disk)
                check(f"{field}.cloneFrom (disk {clone.disk} of domain {clone.domain})", source)
        return "; ".join(problems) or None

    def _image_steps(
        self, name: str, spec: DomainSpec, live: LiveDomain | None
    ) -> tuple[list[Step], str | None]:
        """Images to create or grow; or why a disk cannot be had."""
        steps: list[Step] = []
        for field, path in (("spec.os.kernel", spec.kernel), ("spec.os.initrd", spec.initrd)):
            if path is not None and not images.exists(path):
                return steps, f"{field}: {path} does not exist"
        devs = domain_xml.target_devs(spec.disks)
        for index, (disk, dev) in enumerate(zip(spec.disks, devs, strict=True)):
            field = f"spec.disks[{index}]"
            if disk.path:
                present = images.exists(disk.path)
            else:
                present = self._hv.volume_path(disk.pool or "", disk.volume or "") is not None
            if not present:
                if disk.device == "cdrom":
                    return steps, f"{field}.path: {disk.path} does not exist"
                if disk.clone_from is not None:
                    source = self._clone_source(disk)
                    if source is None or not images.exists(source):
                        what = source or f"disk {disk.clone_from.disk} of {disk.clone_from.domain}"
                        return steps, f"{field}.cloneFrom: {what} does not exist"
                    how = f"copy of {source}"
                elif disk.backing_image is not None:
                    if not images.exists(disk.backing_image):
                        return steps, f"{field}.backingImage: {disk.backing_image} does not exist"
                    how = f"overlay on {disk.backing_image}"
                elif disk.size is not None:
                    how = f"{_mem(disk.size)} {disk.format}"
                else:
                    return steps, (
                        f"{field}: {disk.source} does not exist and the disk has no size, "
                        "backingImage or cloneFrom to create it from"
                    )
                steps.append(
                    Step(
                        "create-image",
                        (Drift(field, disk.source, None),),
                        f"{disk.source}: {how}",
                        item=index,
                    )
                )
                continue
            if disk.size is None or disk.device == "cdrom":
                continue
            current = self._image_size(name, disk, dev, live)
            if current < disk.size:
                steps.append(
                    Step(
                        "grow-image",
                        (Drift(f"{field}.size", _mem(disk.size), _mem(current)),),
                        f"{disk.source}: never shrunk, grown when asked",
                        item=index,
                    )
                )
        return steps, None

    def _image_size(self, name: str, disk: Disk, dev: str, live: LiveDomain | None) -> int:
        if disk.path is None:
            return self._hv.volume_capacity(disk.pool or "", disk.volume or "")
        if live is not None and live.running is not None:
            try:
                return self._hv.block_size(name, dev)
            except BackendError:
                pass  # not attached to the running guest (yet): read the file
        return images.virtual_size(disk.path)

    def _clone_source(self, disk: Disk) -> str | None:
        clone = disk.clone_from
        if clone is None:
            return None
        if clone.path:
            return clone.path
        other = self._hv.get_domain(clone.domain or "")
        if other is None or clone.disk >= len(other.config.disks):
            return None
        source = other.config.disks[clone.disk]
        if source.path:
            return source.path
        return self._hv.volume_path(source.pool or "", source.volume or "")

    # -- act -----------------------------------------------------------------------------

    def act(self, turn: Turn[DomainSpec, LiveDomain], step: Step) -> str:
        """Carry out one step; returns the event message."""
        name, spec, live, now = turn.name, turn.spec, turn.live, turn.now
        details: dict[str, Any] = turn.notes.setdefault("details", dict(turn.status.details))
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
                if "stopping" in details:
                    return self._stopper.step(name, spec, live, details, now, "restart")
                message = self._restart(name, spec, live, details, now)
                return f"{message} to apply {fields} (restartPolicy: Auto)"
            case "autostart":
                self._hv.set_autostart(name, spec.autostart)
                return f"autostart {step.fields[0].actual} -> {spec.autostart}"
            case "resume":
                self._hv.resume_domain(name)
                return "resumed the paused guest" + self._sync_clock(name, spec)
            case "start":
                self._note_start(details, now)
                started = self._hv.start_domain(name)
                was = live.state if live is not None else "new"
                reason = f", {live.reason}" if live is not None and live.state == "shutoff" else ""
                if not started:
                    return f"the guest was running again before kvmrec started it ({was}{reason})"
                return f"started the guest (it was {was}{reason})"
            case "stop":
                assert live is not None
                return self._stopper.step(name, spec, live, details, now, "halt")
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
        self, name: str, spec: DomainSpec, live: LiveDomain, details: dict[str, Any], now: datetime
    ) -> str:
        """Restart the guest to apply what it cannot take live: a clean power off as for a
        stop, and a start once it is off (at once when the grace period is 0)."""
        details["restartFor"] = _drift_key(self._still_different(spec, live))
        message = self._stopper.step(name, spec, live, details, now, "restart")
        if "stopping" in details:
            return message or "restarting the guest"
        self._note_start(details, now)
        details.pop("restarting", None)
        self._hv.start_domain(name)
        return "restarted the guest"

    def _sync_clock(self, name: str, spec: DomainSpec) -> str:
        """Set the guest clock after a resume when the manifest asks; what happened."""
        if not spec.sync_clock:
            return ""
        try:
            self._guest.sync_clock(name)
        except Unavailable:
            raise
        except BackendError as exc:
            log.warning("Domain/%s: guest clock not set: %s", name, exc)
            return f"; its clock was not set: {exc}"
        return "; set its clock through the guest agent"

    # -- what the guest says -------------------------------------------------------------

    def _read_guest(
        self, name: str, spec: DomainSpec, live: LiveDomain, details: dict[str, Any]
    ) -> float | None:
        """Read the guest's addresses, host name and OS into ``details["guest"]``; returns
        when to read again while they are incomplete (the agent or DHCP not there yet)."""
        leases = any(i.network for i in spec.interfaces)
        if live.state != "running" or not (spec.guest_agent or leases):
            details.pop("guest", None)
            details.pop("guestReads", None)
            return None
        running = live.running
        agent = spec.guest_agent and running is not None and running.agent_connected
        try:
            info = self._guest.info(name, agent=agent, leases=leases)
        except Unavailable:
            raise
        except BackendError as exc:
            log.debug("Domain/%s: guest information not read: %s", name, exc)
            return None
        details["guest"] = info.as_dict()
        # With an agent, its own addresses are the answer: a lease can come before the
        # guest has configured its address, or outlive it.
        source = "agent" if spec.guest_agent else "lease"
        complete = (info.agent or not spec.guest_agent) and (
            any(a.source == source for a in info.addresses) or not spec.interfaces
        )
        reads = int(details.get("guestReads", 0))
        if complete or reads >= GUEST_INFO_TRIES:
            return None
        details["guestReads"] = reads + 1
        return GUEST_INFO_RETRY if reads < GUEST_INFO_FAST_TRIES else GUEST_INFO_RETRY_LATER

    @staticmethod
    def _note_start(details: dict[str, Any], now: datetime) -> None:
        crash_loop.note_start(details, now)
        details.pop("guestReads", None)

    def _create_image(self, disk: Disk) -> None:
        if disk.path is None:
            self._hv.create_volume(disk.pool or "", disk.volume or "", disk.format, disk.size or 0)
        elif disk.clone_from is not None:
            source = self._clone_source(disk)
            if source is None:
                raise BackendError(f"{disk.path}: the clone source vanished")
            images.copy(source, disk.path, disk.format)
            if disk.size is not None and images.virtual_size(disk.path) < disk.size:
                images.grow(disk.path, disk.size)
        elif disk.backing_image is not None:
            images.create_overlay(disk.path, disk.backing_image, disk.size)
        else:
            images.create(disk.path, disk.format, disk.size or 0)

    def _grow_image(self, name: str, spec: DomainSpec, index: int, live: LiveDomain | None) -> None:
        disk = spec.disks[index]
        size = disk.size or 0
        if live is not None and live.running is not None:
            self._hv.block_resize(name, domain_xml.target_devs(spec.disks)[index], size)
        elif disk.path is None:
            self._hv.grow_volume(disk.pool or "", disk.volume or "", size)
        else:
            images.grow(disk.path, size)

    def _apply_live(
        self, name: str, spec: DomainSpec, running: DomainConfig, step: Step
    ) -> list[str]:
        """Apply what the running guest can take; returns the fields it refused.

        A refusal is not an error to retry: the definition is already right, the field
        stays in the drift and in RestartRequired, and a restart applies it."""
        refused: list[str] = []
        for drift in step.fields:
            try:
                if drift.field == "spec.vcpus":
                    self._hv.set_vcpus_live(name, spec.vcpus)
                elif drift.field == "spec.memory":
                    self._hv.set_memory_live(name, quantities.to_kib(spec.memory))
                elif drift.field == "spec.interfaces":
                    self._replug(name, spec, running)
            except Unavailable:
                raise
            except BackendError as exc:
                log.info("Domain/%s: %s not applied live: %s", name, drift.field, exc)
                refused.append(drift.field)
        return refused

    def _replug(self, name: str, spec: DomainSpec, running: DomainConfig) -> None:
        """Unplug what should not be there, then plug what is missing; never two
        interfaces with one MAC (a guest that has not let go of one keeps it, and the
        field is left to a restart)."""
        wanted = {i.mac: i for i in spec.interfaces}
        have = {i.mac: i for i in running.interfaces}
        unplug = [
            i
            for mac, i in have.items()
            if mac not in wanted or _iface_key(wanted[mac]) != _iface_key(i)
        ]
        for iface in unplug:
            # The guest must let go of a PCI device, and one without an OS never does.
            with contextlib.suppress(BackendError):
                self._hv.detach_live(name, domain_xml.interface_xml(iface))
        if unplug:
            live = self._hv.get_domain(name)
            running = live.running if live and live.running else running
            have = {i.mac: i for i in running.interfaces}
        held = [
            mac
            for mac in have
            if mac not in wanted or _iface_key(wanted[mac]) != _iface_key(have[mac])
        ]
        for mac, iface in wanted.items():
            if mac not in have:
                self._hv.attach_live(name, domain_xml.interface_xml(iface))
        if held:
            raise BackendError(f"the guest did not release {', '.join(held)}")

    @staticmethod
    def _still_different(spec: DomainSpec, live: LiveDomain) -> list[Drift]:
        """What the running guest has that differs from the spec, after acting."""
        if live.running is None:
            return []
        hot, restart = _live_class(spec, live.running)
        return restart + hot

    # -- report --------------------------------------------------------------------------

    def report(self, turn: Turn[DomainSpec, LiveDomain]) -> Report:
        """What the guest is after acting; restarts it when the running guest refused what
        it could not take live and ``restartPolicy: Auto`` asks for one."""
        obj, spec, name, now, plan = turn.obj, turn.spec, turn.name, turn.now, turn.plan
        status, events = turn.status, turn.events
        details: dict[str, Any] = turn.notes["details"]
        live = turn.live
        assert live is not None
        if not any(step.action in ("stop", "restart") for step in plan.steps):
            details.pop("stopping", None)  # called off: the manifest wants it running again
        if live.state == "running" and spec.run_strategy is RunStrategy.ONCE:
            details["onceGeneration"] = obj.generation
        if live.state == "running" and "stopping" not in details:
            details.pop("restarting", None)
        # A resume kvmrec did not do (the operator's, under runStrategy Manual) leaves the
        # clock as far behind as one of its own.
        resumed = status.details.get("state") == "paused" and live.state == "running"
        if spec.sync_clock and resumed and "resume" not in {s.action for s in plan.steps}:
            synced = self._sync_clock(name, spec)
            events.append(("Normal", "ClockSynced", f"resumed by hand{synced}"))

        restart = self._still_different(spec, live)
        seen = _drift_key(restart)
        auto = spec.restart_policy is RestartPolicy.AUTO and live.running is not None
        # What the running guest refused to take live needs a restart too; but a difference
        # that a restart already failed to fix (a balloon the guest ignores) is not a reason
        # to restart it again and again.
        if restart and auto and "stopping" not in details:
            if details.get("restartFor") == seen:
                details["restartDidNotFix"] = seen
            elif details.get("restartDidNotFix") != seen:
                fields = ", ".join(d.field for d in restart)
                message = self._restart(name, spec, live, details, now)
                events.append(("Normal", "Restarted", f"{message} to apply {fields}"))
                again = self._hv.get_domain(name)
                if again is None:
                    raise BackendError(f"domain {name} vanished while it was being restarted")
                live = turn.live = again
                restart = self._still_different(spec, live)
        if not restart:
            details.pop("restartDidNotFix", None)
            details.pop("restartFor", None)
        drift = diff_config(spec, live.config)
        drift += [d for d in restart if d.field not in {x.field for x in drift}]
        if live.autostart != spec.autostart:
            drift.append(Drift("spec.autostart", spec.autostart, live.autostart))
        want = _wants_running(spec, live, Status(details=details), obj.generation)
        off_course = (want is True and live.state != "running") or (want is False and live.active)
        if off_course and plan.wait is None:
            drift.append(Drift("spec.runStrategy", spec.run_strategy.value, live.state))

        wait = plan.wait
        if plan.wait_reason == "CrashLoopBackOff":
            crash_loop.note_failure(details, now)  # the wait counts from the first sight
        if "stopping" in details:
            wait = self._stopper.next_step_in(spec, details["stopping"], now)
        guest_wait = self._read_guest(name, spec, live, details)
        if guest_wait is not None:
            wait = guest_wait if wait is None else min(wait, guest_wait)

        ready, reason, message, conditions = self._ready(spec, live, status, restart, plan, obj)
        if "stopping" in details:
            message = self._stopper.describe(spec, details["stopping"], now)
            ready, reason = False, "Stopping"
        # A guest whose addresses are reported is read again on every resync, whatever its
        # fingerprint: a new DHCP address moves nothing libvirt shows.
        quiet = not plan.steps and not drift and wait is None and "guest" not in details
        turn.notes["fingerprint"] = live.fingerprint if quiet else None
        return Report(
            ready,
            reason,
            message,
            drift=tuple(drift),
            details={
                **details,
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
        status: Status,
        restart: list[Drift],
        plan: Plan,
        obj: StoredObject,
    ) -> tuple[bool, str, str, tuple[tuple[str, str, str, str], ...]]:
        """``Ready`` (whether, why, what it says) and ``RestartRequired``."""
        want = _wants_running(spec, live, status, obj.generation)
        if plan.wait is not None:
            ready, reason, message = False, "CrashLoopBackOff", plan.wait_message
        elif want is True:
            ready = live.state == "running"
            reason, message = ("Running", "") if ready else ("NotRunning", _state_of(live))
        elif want is False:
            ready = not live.active
            if spec.run_strategy is RunStrategy.RERUN_ON_FAILURE:
                reason = "Completed" if ready else "StillRunning"
            else:
                reason = "Halted" if ready else "StillRunning"
            message = "" if ready else _state_of(live)
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
        details = dict(turn.status.details)
        if live.active:
            message = self._stopper.step(name, spec, live, details, now, "delete")
            if "stopping" in details:
                # Not off yet: the guest's STOPPED event or the next step brings us back.
                if message:
                    turn.events.append(("Normal", "Stopping", message))
                status = recording.deletion_held(
                    replace(turn.status, details=details),
                    "Stopping",
                    "powering the guest off before deleting it",
                    now,
                )
                return status, self._stopper.next_step_in(spec, details["stopping"], now)
            turn.notes["stopped"] = f"; {message}"
        elif "stopping" in details:
            turn.notes["stopped"] = f"; {stopping.finished(live, details, now)}"
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

    def _deletable(self, disk: Disk) -> bool:
        """The disk's image goes with the domain: asked for, and (for a file) under the
        disk roots, so a manifest can never make kvmrec delete a file elsewhere."""
        if not disk.delete_image or disk.device != "disk":
            return False
        if disk.path is None or self._disks is None:
            return True
        return self._disks.problem(disk.path) is None


class DomainReconciler(Reconciler[DomainSpec, LiveDomain]):
    def __init__(
        self,
        store: Store,
        hypervisor: Hypervisor,
        clock: Clock,
        dependencies: Dependencies | None = None,
        *,
        disk_roots: Iterable[str | Path] | None = None,
        allow_device_disks: bool = False,
        guest: GuestAgent | None = None,
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
