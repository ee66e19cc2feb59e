"""Stopping a guest cleanly, one step per reconcile, never waiting.

A stop (runStrategy Halted, a deletion, a restart to apply a change) asks the guest agent
to power the guest off when the manifest has one and it is connected, presses the ACPI
power button next (at once without an agent, after half the grace period with one), and
destroys the guest when the grace period is over: the Domain's
``terminationGracePeriodSeconds``, else the service's ``--stop-grace-period``; 0 destroys at
once. Each request is made once.

The state of a stop in progress lives in the Domain's status details (``stopping``: since
when, why, what was asked), so a restarted kvmrec carries on where it was. The guest's
STOPPED event, or the requeue at the next escalation, brings the reconcile back; when it
finds the guest off, ``finished`` records which request worked (``lastStop``).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from kvmrec.api.kinds import DomainSpec
from kvmrec.backends import protocols
from kvmrec.backends.errors import BackendError, Unavailable
from kvmrec.backends.libvirt.live import LiveDomain

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
    def _acpi_at(grace: float, stopping: dict[str, Any]) -> float:
        """Seconds into the stop at which the power button is pressed: at once unless the
        agent took the request, then at half the grace period."""
        return grace / 2 if stopping["asked"] else 0.0

    def step(
        self,
        name: str,
        spec: DomainSpec,
        live: LiveDomain,
        details: dict[str, Any],
        now: datetime,
        purpose: str,
    ) -> str:
        """Move the stop of a running guest one step on (its state in
        ``details["stopping"]``); returns what was done, if anything."""
        grace = self._grace(spec)
        stopping = details.setdefault(
            "stopping", {"since": now.isoformat(), "purpose": purpose, "asked": [], "tried": []}
        )
        elapsed = _elapsed(stopping, now)
        if elapsed >= grace:
            self._hv.destroy_domain(name)
            del details["stopping"]
            details["lastStop"] = {"method": "destroy", "seconds": round(elapsed, 1)}
            if purpose == "restart":
                details["restarting"] = True
            if grace <= 0:
                return "destroyed the guest (grace period 0)"
            asked = " and ".join(METHODS[m] for m in stopping["asked"]) or "nothing"
            return (
                f"destroyed the guest: it did not power off within the {grace:g}s grace "
                f"period (asked {asked})"
            )
        done: list[str] = []
        agent = spec.guest_agent and live.running is not None and live.running.agent_connected
        if agent and "agent" not in stopping["tried"]:
            done += self._ask(name, "agent", stopping)
        if elapsed >= self._acpi_at(grace, stopping) and "acpi" not in stopping["tried"]:
            done += self._ask(name, "acpi", stopping)
        if not done:
            return ""
        return f"asked the guest to power off {' and '.join(done)} ({purpose})"

    def _ask(self, name: str, method: str, stopping: dict[str, Any]) -> list[str]:
        stopping["tried"].append(method)
        try:
            self._guest.shutdown(name, method)
        except Unavailable:
            raise
        except BackendError as exc:
            log.info("Domain/%s: power off %s refused: %s", name, METHODS[method], exc)
            return []
        stopping["asked"].append(method)
        return [METHODS[method]]

    def describe(self, spec: DomainSpec, stopping: dict[str, Any], now: datetime) -> str:
        """A stop in progress, for the Ready condition."""
        asked = " and ".join(METHODS[m] for m in stopping["asked"]) or "no request answered"
        left = max(0.0, self._grace(spec) - _elapsed(stopping, now))
        return f"powering off ({stopping['purpose']}): asked {asked}; destroyed in {left:.0f}s"

    def next_step_in(self, spec: DomainSpec, stopping: dict[str, Any], now: datetime) -> float:
        """Seconds until a stop in progress escalates (ACPI, then destroy)."""
        grace = self._grace(spec)
        pending = "acpi" not in stopping["tried"]
        step_at = self._acpi_at(grace, stopping) if pending else grace
        return max(0.2, step_at - _elapsed(stopping, now))


def finished(live: LiveDomain, details: dict[str, Any], now: datetime) -> str:
    """A stop in progress found the guest off: which request worked."""
    stopping = details.pop("stopping")
    if stopping["purpose"] == "restart":
        details["restarting"] = True
    seconds = round(_elapsed(stopping, now), 1)
    if live.reason == "shutdown" and stopping["asked"]:
        method = stopping["asked"][-1]
        details["lastStop"] = {"method": method, "seconds": seconds}
        return f"the guest powered off {METHODS[method]} after {seconds:g}s"
    details["lastStop"] = {"method": "other", "seconds": seconds}
    return f"the guest stopped after {seconds:g}s ({live.reason}) before kvmrec destroyed it"


def _elapsed(stopping: dict[str, Any], now: datetime) -> float:
    """Seconds since the stop began."""
    return (now - datetime.fromisoformat(stopping["since"])).total_seconds()
