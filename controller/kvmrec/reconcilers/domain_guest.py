"""The running guest: changes it takes live, its clock, and what it says about itself.

vCPUs up to maxVcpus, memory up to maxMemory with a balloon, and interfaces (hot-plugged)
change live; a refusal is left to a restart. For a guest with the agent, or with a NIC on
a libvirt network, its addresses, host name and OS are read (the agent first, DHCP leases
as a fallback) while it boots until they are complete.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace

from kvmrec.api import quantities
from kvmrec.api.kinds import DomainSpec
from kvmrec.backends import domain_xml, protocols
from kvmrec.backends.domain_xml import DomainConfig
from kvmrec.backends.errors import BackendError, Unavailable
from kvmrec.backends.libvirt.live import LiveDomain
from kvmrec.reconcilers.domain_diff import iface_key
from kvmrec.reconcilers.domain_memory import DomainMemory, Guest
from kvmrec.reconcilers.plans import Step

log = logging.getLogger("kvmrec.reconcilers.domain")

# Guest information (addresses, host name, OS) is read again while it is incomplete (the
# agent not up yet, no address yet): every second for the first half minute of a boot, then
# every 5 s, for about five minutes in all; after that the periodic resync reads it.
GUEST_INFO_RETRY = 1.0
GUEST_INFO_RETRY_LATER = 5.0
GUEST_INFO_FAST_TRIES = 30
GUEST_INFO_TRIES = 90
# A guest clock this far (seconds) from the host's is set again under syncClock, whenever
# its offset is read; closer is the agent's own latency, not drift.
CLOCK_TOLERANCE = 2.0


class GuestSide:
    """The Domain kind's dealings with the running guest (a part of reconcilers/domain.py)."""

    _hv: protocols.DomainHost
    _guest: protocols.GuestAgent

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

    def _correct_clock(
        self, name: str, spec: DomainSpec, memory: DomainMemory
    ) -> tuple[str, DomainMemory]:
        """Under syncClock, set a guest clock read too far off the host's (a pause, a
        suspend of the host, an RTC left behind); what was done, and the offset after."""
        info = memory.guest.info or {}
        offset = info.get("clockOffsetSeconds")
        if not spec.sync_clock or not isinstance(offset, int | float):
            return "", memory
        if abs(offset) < CLOCK_TOLERANCE:
            return "", memory
        done = self._sync_clock(name, spec)
        try:
            after = self._guest.clock_offset(name)
        except BackendError:
            after = None
        guest = replace(memory.guest, info={**info, "clockOffsetSeconds": after})
        return f"the guest clock was {offset:+.1f} s off the host's{done}", replace(
            memory, guest=guest
        )

    def _read_guest(
        self, name: str, spec: DomainSpec, live: LiveDomain, memory: DomainMemory
    ) -> tuple[float | None, DomainMemory]:
        """Read the guest's addresses, host name and OS into ``memory.guest``; returns when
        to read again while they are incomplete (the agent or DHCP not there yet)."""
        leases = any(i.network for i in spec.interfaces)
        if live.state != "running" or not (spec.guest_agent or leases):
            return None, memory if memory.guest == Guest() else replace(memory, guest=Guest())
        running = live.running
        agent = spec.guest_agent and running is not None and running.agent_connected
        try:
            info = self._guest.info(name, agent=agent, leases=leases)
        except Unavailable:
            raise
        except BackendError as exc:
            log.debug("Domain/%s: guest information not read: %s", name, exc)
            return None, memory
        # With an agent, its own addresses are the answer: a lease can come before the
        # guest has configured its address, or outlive it.
        source = "agent" if spec.guest_agent else "lease"
        complete = (info.agent or not spec.guest_agent) and (
            any(a.source == source for a in info.addresses) or not spec.interfaces
        )
        reads = memory.guest.reads or 0
        if complete or reads >= GUEST_INFO_TRIES:
            return None, replace(memory, guest=replace(memory.guest, info=info.as_dict()))
        memory = replace(memory, guest=Guest(info.as_dict(), reads + 1))
        return (
            GUEST_INFO_RETRY if reads < GUEST_INFO_FAST_TRIES else GUEST_INFO_RETRY_LATER
        ), memory

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
            if mac not in wanted or iface_key(wanted[mac]) != iface_key(i)
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
            if mac not in wanted or iface_key(wanted[mac]) != iface_key(have[mac])
        ]
        for mac, iface in wanted.items():
            if mac not in have:
                self._hv.attach_live(name, domain_xml.interface_xml(iface))
        if held:
            raise BackendError(f"the guest did not release {', '.join(held)}")
