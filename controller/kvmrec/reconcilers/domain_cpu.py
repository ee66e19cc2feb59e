"""A guest whose CPU this host cannot run: a condition that says so, not a crash loop.

libvirt or QEMU refuse a start whose CPU the host cannot give ("Host CPU does not provide
required features: vmx", "CPU mode 'host-passthrough' ... is not supported by hypervisor",
QEMU's "failed to set MSR" on nested hosts). Starting again at once cannot help: the host
does not change its CPU. So a refused start makes ``Ready`` False with reason
``CpuNotSupported`` and libvirt's words, and the next start waits ``RETRY`` seconds, unless
the manifest changes first (a new generation starts at once). The refusal is remembered in
the Domain's memory (``cpuRefused``) so that the wait survives a restart of the service and
the libvirt events of the failed start do not bring the next attempt forward.

Only a Domain that names a CPU is judged so: the default CPU starts everywhere, and a start
of it that fails is an ordinary failure, retried with backoff.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from kvmrec.api.kinds import DomainSpec
from kvmrec.backends import protocols
from kvmrec.backends.errors import BackendError, Unavailable
from kvmrec.backends.libvirt.live import LiveDomain
from kvmrec.reconcilers.domain_diff import cpu_view
from kvmrec.reconcilers.domain_memory import CpuRefusal, DomainMemory
from kvmrec.reconcilers.kind import StepFailed, Turn

REASON = "CpuNotSupported"

RETRY = 300.0
"""Five minutes between attempts, the longest crash-loop wait: a host's CPU does not change
by itself, but a libvirtd or kernel upgraded meanwhile may run it."""

# How libvirt and QEMU word a CPU the host cannot run (lower case).
_REFUSALS = (
    "host cpu does not provide",
    "cpu is incompatible with host cpu",
    "failed to set msr",
    "is not supported by hypervisor",
    "cpu model",
    "guest cpu doesn't match",
    "host doesn't support",
    "cpu feature",
)


def refused(spec: DomainSpec, exc: BackendError) -> bool:
    """Whether a failed start is the host refusing the CPU the manifest asks for."""
    if spec.cpu is None or isinstance(exc, Unavailable):
        return False
    text = str(exc).lower()
    return any(words in text for words in _REFUSALS)


class CpuNotSupported(StepFailed):
    def __init__(self, message: str) -> None:
        super().__init__(REASON, message, RETRY)


def describe(spec: DomainSpec, words: str, seconds: float | None) -> str:
    """Ready's message: what was asked, libvirt's words, when it is tried again (None: at
    the next start) and what starts everywhere."""
    asked = cpu_view(spec.cpu) or {"mode": "default"}
    what = ", ".join(f"{k} {v}" for k, v in asked.items() if k != "features")
    when = "at the next start" if seconds is None else f"in {seconds:.0f} s"
    return (
        f"this host cannot run the guest's CPU (spec.cpu {what}): {words}; next try {when} "
        "or when the manifest changes (leave spec.cpu out for QEMU's default CPU, or use "
        "mode custom with model kvm64, which start everywhere)"
    )


def start(
    hv: protocols.DomainHost, turn: Turn[DomainSpec, LiveDomain], memory: DomainMemory
) -> bool:
    """Start the guest (``DomainHost.start_domain``). A start refused for its CPU raises
    ``CpuNotSupported``, with the refusal kept in the status the failure records; ``memory``
    is the Domain's before the attempt, which therefore counts as no start at all."""
    try:
        return hv.start_domain(turn.name)
    except BackendError as exc:
        if not refused(turn.spec, exc):
            raise
        kept = replace(memory, cpu_refused=CpuRefusal(turn.now, turn.obj.generation, str(exc)))
        turn.status = replace(turn.status, details=kept.into(turn.status.details))
        raise CpuNotSupported(describe(turn.spec, str(exc), RETRY)) from exc


@dataclass(frozen=True)
class Held:
    seconds: float  # until the next start may be tried
    message: str


def held(spec: DomainSpec, memory: DomainMemory, generation: int, now: datetime) -> Held | None:
    """How long the next start of a refused CPU waits; None: start it now."""
    last = memory.cpu_refused
    if last is None or last.generation != generation or spec.cpu is None:
        return None
    left = RETRY - (now - last.at).total_seconds()
    return Held(left, describe(spec, last.message, left)) if left > 0 else None
