"""Stopping a guest cleanly, one step per reconcile, never waiting.

A stop (runStrategy Halted, a deletion, a restart to apply a change) asks the guest agent
to power the guest off when the manifest has one and it is connected, presses the ACPI
power button next (at once without an agent, after half the grace period with one), and
destroys the guest when the grace period is over: the Domain's
``terminationGracePeriodSeconds``, else the service's ``--stop-grace-period``; 0 destroys at
once. Each request is made once.

The state of a stop in progress is part of the Domain's memory (reconcilers/domain_memory.py;
``stopping`` in its status details: since when, why, what was asked), so a restarted
kvmrec carries on where it was. The guest's STOPPED event, or the requeue at the next
escalation, brings the reconcile back; when it finds the guest off, ``finished`` records
which request worked (``lastStop``).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime

from kvmrec.api.kinds import DomainSpec
from kvmrec.backends import protocols
from kvmrec.backends.errors import BackendError, Unavailable
from kvmrec.backends.libvirt.live import LiveDomain
from kvmrec.reconcilers.domain_memory import DomainMemory, LastStop, Stop

log = logging.getLogger(__name__)

METHODS = {
    "agent": "through the guest agent",
    "acpi": "by the ACPI power button",
}


class Stopper:
    """Moves the stops of running guests on."""

    def __init__(
        self, hypervisor: protocols.Domains, guest: protocols.GuestAgent, default_grace: float
    ) -> None:
        self._hv = hypervisor
        self._guest = guest
        self._default_grace = default_grace

    def _grace(self, spec: DomainSpec) -> float:
        return float(spec.grace_period) if spec.grace_period is not None else self._default_grace

    @staticmethod
    def _acpi_at(grace: float, stop: Stop) -> float:
        """Seconds into the stop at which the power button is pressed: at once unless the
        agent took the request, then at half the grace period."""
        return grace / 2 if stop.asked else 0.0

    def step(
        self,
        name: str,
        spec: DomainSpec,
        live: LiveDomain,
        memory: DomainMemory,
        now: datetime,
        purpose: str,
    ) -> tuple[str, DomainMemory]:
        """Move the stop of a running guest one step on (its state in
        ``memory.stopping``); returns what was done, if anything, and the memory after."""
        grace = self._grace(spec)
        stop = memory.stopping or Stop(now, purpose)
        elapsed = _elapsed(stop, now)
        if elapsed >= grace:
            self._hv.destroy_domain(name)
            memory = replace(
                memory,
                stopping=None,
                last_stop=LastStop("destroy", round(elapsed, 1)),
                restarting=memory.restarting or purpose == "restart",
            )
            if grace <= 0:
                return "destroyed the guest (grace period 0)", memory
            asked = " and ".join(METHODS[m] for m in stop.asked) or "nothing"
            return (
                f"destroyed the guest: it did not power off within the {grace:g}s grace "
                f"period (asked {asked})"
            ), memory
        done: list[str] = []
        agent = spec.guest_agent and live.running is not None and live.running.agent_connected
        if agent and "agent" not in stop.tried:
            stop = self._ask(name, "agent", stop, done)
        if elapsed >= self._acpi_at(grace, stop) and "acpi" not in stop.tried:
            stop = self._ask(name, "acpi", stop, done)
        memory = replace(memory, stopping=stop)
        if not done:
            return "", memory
        return f"asked the guest to power off {' and '.join(done)} ({purpose})", memory

    def _ask(self, name: str, method: str, stop: Stop, done: list[str]) -> Stop:
        stop = replace(stop, tried=(*stop.tried, method))
        try:
            self._guest.shutdown(name, method)
        except Unavailable:
            raise
        except BackendError as exc:
            log.info("Domain/%s: power off %s refused: %s", name, METHODS[method], exc)
            return stop
        done.append(METHODS[method])
        return replace(stop, asked=(*stop.asked, method))

    def describe(self, spec: DomainSpec, stop: Stop, now: datetime) -> str:
        """A stop in progress, for the Ready condition."""
        asked = " and ".join(METHODS[m] for m in stop.asked) or "no request answered"
        left = max(0.0, self._grace(spec) - _elapsed(stop, now))
        return f"powering off ({stop.purpose}): asked {asked}; destroyed in {left:.0f}s"

    def next_step_in(self, spec: DomainSpec, stop: Stop, now: datetime) -> float:
        """Seconds until a stop in progress escalates (ACPI, then destroy)."""
        grace = self._grace(spec)
        pending = "acpi" not in stop.tried
        step_at = self._acpi_at(grace, stop) if pending else grace
        return max(0.2, step_at - _elapsed(stop, now))


def finished(live: LiveDomain, memory: DomainMemory, now: datetime) -> tuple[str, DomainMemory]:
    """A stop in progress found the guest off: which request worked."""
    stop = memory.stopping
    assert stop is not None
    restarting = memory.restarting or stop.purpose == "restart"
    seconds = round(_elapsed(stop, now), 1)
    if live.reason == "shutdown" and stop.asked:
        method = stop.asked[-1]
        said = f"the guest powered off {METHODS[method]} after {seconds:g}s"
    else:
        method = "other"
        said = f"the guest stopped after {seconds:g}s ({live.reason}) before kvmrec destroyed it"
    last = LastStop(method, seconds)
    return said, replace(memory, stopping=None, last_stop=last, restarting=restarting)


def _elapsed(stop: Stop, now: datetime) -> float:
    """Seconds since the stop began."""
    return (now - stop.since).total_seconds()
