"""Domains libvirt is busy with: not drift, and not kvmrec's to touch meanwhile.

libvirt pauses a running guest for jobs of its own (an internal snapshot, a save, a dump,
an offline migration) and starts a reverted guest paused while QEMU loads the snapshot;
it resumes the guest itself when the job ends. Resuming it meanwhile would be acting on
libvirt's state as if it were drift, and any other change would wait for the job anyway.
The reconcile looks again shortly; libvirt's lifecycle event at the job's end usually
brings the domain back sooner.

Two signs, either enough: libvirt reports a job on the domain (``LiveDomain.busy``), or
the guest is paused with the reason of such a job. The reason is read first, so it is
the sign that does not miss a job ending in between. A pause whose job is gone (libvirtd
restarted in the middle of it) would wait for ever on the reason alone: once no job has
been reported for ``STALE`` seconds it is taken as an ordinary pause, except after a
failed post-copy migration, which only the operator may resume (the guest may already run
on the destination).
"""

from __future__ import annotations

import threading

from kvmrec.backends.libvirt.live import LiveDomain
from kvmrec.engine.clock import Clock
from kvmrec.reconcilers.plans import Plan, Step

WAIT_REASON = "LibvirtJob"
# Seconds until a domain libvirt is busy with is looked at again: its jobs (a snapshot of a
# small guest ~40 ms, a revert ~0.5 s) mostly end well before.
RETRY = 1.0
# Seconds a pause for a job is waited on with no job reported: far longer than the time
# between two steps of any job; a save or dump of a big guest runs as a reported job.
STALE = 30.0
_NEVER_STALE = {"postcopy-failed"}


class Jobs:
    """Which domains are libvirt's for now, remembering since when a pause for a job has
    had no job behind it."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._unbacked: dict[str, float] = {}  # name -> when first seen paused without a job

    def plan(self, name: str, live: LiveDomain) -> Plan | None:
        """The plan to wait for libvirt's job on ``live``, or None when there is none."""
        with self._lock:
            if live.busy or not live.paused_for_job:
                self._unbacked.pop(name, None)
                return _waiting(live) if live.busy else None
            since = self._unbacked.setdefault(name, self._clock.monotonic())
        if live.reason in _NEVER_STALE or self._clock.monotonic() - since < STALE:
            return _waiting(live)
        return None


def _waiting(live: LiveDomain) -> Plan:
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
