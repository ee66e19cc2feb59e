"""Domains libvirt is busy with: not drift, and not kvmrec's to touch meanwhile.

libvirt pauses a running guest for jobs of its own (an internal snapshot, a save, a dump,
an offline migration) and starts a reverted guest paused while QEMU loads the snapshot;
it resumes the guest itself when the job ends. Resuming it meanwhile would be acting on
libvirt's state as if it were drift, and any other change would wait for the job anyway.
The reconcile looks again shortly; libvirt's lifecycle event at the job's end usually
brings the domain back sooner.
"""

from __future__ import annotations

from kvmrec.backends.hypervisor import LiveDomain
from kvmrec.reconcilers.plans import Plan, Step

WAIT_REASON = "LibvirtJob"
# Seconds until a domain libvirt is busy with is looked at again: its jobs (a snapshot of a
# small guest ~40 ms, a revert ~0.5 s) mostly end well before.
RETRY = 1.0


def plan(live: LiveDomain) -> Plan:
    """The plan for a domain in a libvirt job: wait for it."""
    if live.state == "paused":
        message = f"libvirt paused the guest for a job of its own ({live.reason})"
    else:
        message = f"libvirt is running a job on the domain (it is {live.state}, {live.reason})"
    return Plan(
        steps=(Step("wait", detail=f"{message}; looking again in {RETRY:g}s"),),
        wait=RETRY,
        wait_reason=WAIT_REASON,
        wait_message=message,
    )
