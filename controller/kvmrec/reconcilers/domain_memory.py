"""What the Domain kind remembers between reconciles, typed, in one value.

It is stored in the Domain's status details under the keys kvmrec has always used
(``stopping``, ``lastStop``, ``restarting``, ``restartFor``, ``restartDidNotFix``,
``lastStart``, ``lastFailure``, ``quickFailures``, ``guest``, ``guestReads``,
``onceGeneration``, ``cpuRefused``; ``install``, the phase of an install from media), so
a state file written before the memory was typed reads the same, and ``kvmrec status -o
json`` / ``describe`` show what they showed. ``load`` accepts any of the keys absent;
``dump`` writes only those that hold something. The values are frozen: a change is a new
value (``dataclasses.replace``), handed back to the reconcile that stores it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Stop:
    """A clean power off in progress (reconcilers/stopping.py)."""

    since: datetime
    purpose: str  # "halt", "restart", "delete"
    asked: tuple[str, ...] = ()  # requests the guest took
    tried: tuple[str, ...] = ()  # requests made

    @classmethod
    def load(cls, raw: Mapping[str, Any]) -> Stop:
        return cls(
            datetime.fromisoformat(raw["since"]),
            str(raw.get("purpose", "halt")),
            tuple(raw.get("asked") or ()),
            tuple(raw.get("tried") or ()),
        )

    def dump(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "purpose": self.purpose,
            "asked": list(self.asked),
            "tried": list(self.tried),
        }


@dataclass(frozen=True)
class LastStop:
    """How the last stop ended: which request worked, after how long."""

    method: str  # "agent", "acpi", "destroy", "other"
    seconds: float

    def dump(self) -> dict[str, Any]:
        return {"method": self.method, "seconds": self.seconds}


@dataclass(frozen=True)
class CrashLoop:
    """The crash-loop count (reconcilers/crash_loop.py)."""

    last_start: datetime | None = None  # when kvmrec last started the guest
    last_failure: datetime | None = None  # when it noticed the guest stopped after that
    quick_failures: int | None = None  # quick failures in a row before the current one

    @property
    def failures(self) -> int:
        return self.quick_failures or 0


@dataclass(frozen=True)
class Guest:
    """What the running guest says about itself (addresses, host name, OS)."""

    info: Mapping[str, Any] | None = None
    reads: int | None = None  # reads made while it was incomplete


INSTALLING = "Installing"
INSTALLED = "Installed"


@dataclass(frozen=True)
class InstallPhase:
    """An install from media (reconcilers/installs.py): under way, or done for good."""

    phase: str  # INSTALLING | INSTALLED
    since: datetime  # when the phase began
    booted: bool = False  # the installer has run (a power off after that ends the install)
    files: tuple[str, ...] = ()  # kernel and initrd kvmrec copied out of an ISO, to delete
    how: str = ""  # Installed: "Installed", or "Existing" (defined before any install)

    @classmethod
    def load(cls, raw: Mapping[str, Any]) -> InstallPhase:
        return cls(
            str(raw["phase"]),
            datetime.fromisoformat(raw["since"]),
            bool(raw.get("booted")),
            tuple(str(f) for f in raw.get("files") or ()),
            str(raw.get("how", "")),
        )

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {"phase": self.phase, "since": self.since.isoformat()}
        if self.phase == INSTALLING:
            out["booted"] = self.booted
        if self.files:
            out["files"] = list(self.files)
        if self.how:
            out["how"] = self.how
        return out


@dataclass(frozen=True)
class CpuRefusal:
    """The host refused to start the guest with its CPU (reconcilers/domain_cpu.py)."""

    at: datetime
    generation: int  # of the manifest whose CPU was refused
    message: str  # libvirt's words

    @classmethod
    def load(cls, raw: Mapping[str, Any]) -> CpuRefusal:
        return cls(datetime.fromisoformat(raw["at"]), int(raw["generation"]), str(raw["message"]))

    def dump(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "generation": self.generation, "message": self.message}


@dataclass(frozen=True)
class DomainMemory:
    """Everything the Domain kind carries from one reconcile to the next."""

    stopping: Stop | None = None
    last_stop: LastStop | None = None
    restarting: bool = False  # kvmrec powered it off to apply a change: it comes back
    restart_for: tuple[str, ...] | None = None  # the difference the last restart was for
    restart_did_not_fix: tuple[str, ...] | None = None  # ... which that restart left
    crash: CrashLoop = field(default_factory=CrashLoop)
    guest: Guest = field(default_factory=Guest)
    once_generation: int | None = None  # runStrategy Once: the generation that ran
    cpu_refused: CpuRefusal | None = None  # the last start refused for the CPU
    install: InstallPhase | None = None

    @classmethod
    def load(cls, details: Mapping[str, Any]) -> DomainMemory:
        """From status details as any version of kvmrec wrote them."""
        stopping = details.get("stopping")
        last_stop = details.get("lastStop")
        quick = details.get("quickFailures")
        reads = details.get("guestReads")
        once = details.get("onceGeneration")
        refused = details.get("cpuRefused")
        install = details.get("install")
        return cls(
            stopping=Stop.load(stopping) if isinstance(stopping, Mapping) else None,
            last_stop=(
                LastStop(str(last_stop["method"]), float(last_stop["seconds"]))
                if isinstance(last_stop, Mapping)
                else None
            ),
            restarting=bool(details.get("restarting")),
            restart_for=_strings(details.get("restartFor")),
            restart_did_not_fix=_strings(details.get("restartDidNotFix")),
            crash=CrashLoop(
                _time(details.get("lastStart")),
                _time(details.get("lastFailure")),
                int(quick) if quick is not None else None,
            ),
            guest=Guest(
                details.get("guest") if isinstance(details.get("guest"), Mapping) else None,
                int(reads) if reads is not None else None,
            ),
            once_generation=int(once) if once is not None else None,
            cpu_refused=CpuRefusal.load(refused) if isinstance(refused, Mapping) else None,
            install=InstallPhase.load(install) if isinstance(install, Mapping) else None,
        )

    def into(self, details: Mapping[str, Any]) -> dict[str, Any]:
        """``details`` with what they remembered replaced by this memory."""
        return {**{k: v for k, v in details.items() if k not in KEYS}, **self.dump()}

    def dump(self) -> dict[str, Any]:
        """Into status details, the keys that hold something."""
        out: dict[str, Any] = {}
        if self.stopping is not None:
            out["stopping"] = self.stopping.dump()
        if self.last_stop is not None:
            out["lastStop"] = self.last_stop.dump()
        if self.restarting:
            out["restarting"] = True
        if self.restart_for is not None:
            out["restartFor"] = list(self.restart_for)
        if self.restart_did_not_fix is not None:
            out["restartDidNotFix"] = list(self.restart_did_not_fix)
        if self.crash.last_start is not None:
            out["lastStart"] = self.crash.last_start.isoformat()
        if self.crash.last_failure is not None:
            out["lastFailure"] = self.crash.last_failure.isoformat()
        if self.crash.quick_failures is not None:
            out["quickFailures"] = self.crash.quick_failures
        if self.guest.info is not None:
            out["guest"] = dict(self.guest.info)
        if self.guest.reads is not None:
            out["guestReads"] = self.guest.reads
        if self.once_generation is not None:
            out["onceGeneration"] = self.once_generation
        if self.cpu_refused is not None:
            out["cpuRefused"] = self.cpu_refused.dump()
        if self.install is not None:
            out["install"] = self.install.dump()
        return out


KEYS = frozenset(
    {
        "stopping",
        "lastStop",
        "restarting",
        "restartFor",
        "restartDidNotFix",
        "lastStart",
        "lastFailure",
        "quickFailures",
        "guest",
        "guestReads",
        "onceGeneration",
        "cpuRefused",
        "install",
    }
)
"""The status details keys the memory is stored under."""


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _strings(value: Any) -> tuple[str, ...] | None:
    return tuple(str(v) for v in value) if isinstance(value, list | tuple) else None
