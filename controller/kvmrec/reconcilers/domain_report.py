"""What a Domain is after acting, for its status; and the restarts that report decides.

The report (a part of reconcilers/domain.py) compares the guest observed again with the
manifest: the drift, ``Ready`` (from the run state ``runStrategy`` asks for, a crash-loop
wait, a stop in progress) and ``RestartRequired``. A running guest that refused what it
could not take live is restarted here under ``restartPolicy: Auto``, once per difference:
one that a restart did not fix is not restarted for again. What the domain remembers
(reconcilers/domain_memory.py) leaves the report as a new value, into status details.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from kvmrec.api import osinfo
from kvmrec.api.kinds import DomainSpec, RestartPolicy, RunStrategy
from kvmrec.backends.errors import BackendError
from kvmrec.backends.libvirt.live import LiveDomain
from kvmrec.reconcilers import crash_loop, domain_cpu, installs, stopping
from kvmrec.reconcilers.domain_diff import (
    diff_config,
    drift_key,
    live_class,
    state_of,
    wants_running,
)
from kvmrec.reconcilers.domain_guest import GuestSide
from kvmrec.reconcilers.domain_memory import DomainMemory
from kvmrec.reconcilers.kind import Report, Turn
from kvmrec.reconcilers.plans import Plan
from kvmrec.reconcilers.seeds import seed_details
from kvmrec.store.records import Drift, Status, StoredObject


def _os_minimum(spec: DomainSpec, status: Status) -> tuple[tuple[str, str, str, str], ...]:
    """``BelowOSMinimum``: memory or vCPUs below what the osVariant's OS needs (a warning:
    the guest is made as asked)."""
    known = osinfo.database().by_id(spec.os_id) if spec.os_id is not None else None
    short = known.below_minimum(spec.memory, spec.vcpus) if known is not None else []
    if short:
        return (("BelowOSMinimum", "True", "BelowMinimum", "; ".join(short)),)
    if status.condition("BelowOSMinimum") is not None:
        return (("BelowOSMinimum", "False", "AtLeastMinimum", ""),)
    return ()


def consoles(live: LiveDomain) -> dict[str, Any] | None:
    """Where to reach a running guest's consoles (``virsh vncdisplay``, ``virsh ttyconsole``);
    None while it does not run."""
    running = live.running
    if running is None or not live.active:
        return None
    vnc = None
    if running.vnc_port is not None:
        display = running.vnc_port - 5900
        listen = running.graphics.listen
        vnc = {"display": f":{display}", "port": running.vnc_port, "listen": listen}
    serial = {"pty": running.serial_pty} if running.serial_pty else None
    return {"vnc": vnc, "serial": serial}


class DomainReport(GuestSide):
    """The Domain kind's report and restarts (a part of reconcilers/domain.py)."""

    _stopper: stopping.Stopper

    @staticmethod
    def _memory(turn: Turn[DomainSpec, LiveDomain]) -> DomainMemory:
        """What the domain remembers, as this turn has it so far."""
        memory = turn.notes.get("memory")
        return (
            memory if isinstance(memory, DomainMemory) else DomainMemory.load(turn.status.details)
        )

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
        try:
            self._hv.start_domain(name)
        except BackendError as exc:
            if not domain_cpu.refused(spec, exc):
                raise
            # Off now; the next reconcile's start records the refusal and waits.
            raise domain_cpu.CpuNotSupported(domain_cpu.describe(spec, str(exc), None)) from exc
        return "restarted the guest", memory

    @staticmethod
    def _note_start(memory: DomainMemory, now: datetime) -> DomainMemory:
        memory = installs.phase_started(crash_loop.note_start(memory, now))
        if memory.guest.reads is None:
            return memory
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
        # Each change only where it changes something: a replace of the memory costs more
        # than the comparison, and most reconciles change none of these.
        stopping = any(step.action in ("stop", "restart") for step in plan.steps)
        if not stopping and memory.stopping is not None:
            memory = replace(memory, stopping=None)  # called off: the manifest wants it running
        running = live.state == "running"
        if running and spec.run_strategy is RunStrategy.ONCE:
            memory = replace(memory, once_generation=obj.generation)
        refused = memory.cpu_refused is not None
        if running and memory.stopping is None and (memory.restarting or refused):
            memory = replace(memory, restarting=False, cpu_refused=None)
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
        tried = memory.restart_did_not_fix is not None or memory.restart_for is not None
        if not restart and tried:
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
        corrected, memory = self._correct_clock(name, spec, memory)
        if corrected:
            events.append(("Normal", "ClockSynced", corrected))
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
                **seed_details(spec),
                "consoles": consoles(live),
            },
            requeue_after=wait,
            conditions=conditions,
        )

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
            ready, reason, message = (
                False,
                plan.wait_reason or "CrashLoopBackOff",
                plan.wait_message,
            )
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
        installed = installs.condition(spec, memory, status)
        return ready, reason, message, conditions + _os_minimum(spec, status) + installed
