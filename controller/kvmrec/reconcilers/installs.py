"""Installs from media (``spec.install``): the installer boots until the guest powers off.

Two phases, kept in the Domain's memory (``install`` in its status details), so a restart
of kvmrec resumes an install and never repeats one:

- **Installing** (a domain kvmrec defines with ``install`` set): the definition carries the
  installer, a cdrom after the disks booted first (``cdrom``) or the installer's kernel,
  initrd and ``extraArgs`` as a direct kernel boot (``location``; out of an ISO they are
  copied to ``<first disk root>/<name>-install-vmlinuz`` and ``-install-initrd``), and
  ``on_reboot`` destroy, as virt-install has it, since most installers reboot at their end.
  The install ends the first time the guest, having run the installer, shuts itself off
  (state reason ``shutdown``): that is the installer's end, not a failure, so neither the
  run strategy nor the crash-loop count reads it as one.
- **Installed**: the definition is the manifest's alone (media removed, boot from disk);
  kvmrec starts the guest again (as virt-install does), deletes the kernel and initrd it
  copied out, and records the ``Installed`` condition. Nothing sends an installed guest
  back to the installer: a later change of ``install`` is not drift, and a domain that
  existed before an install began (adopted, or made before ``install`` was written)
  counts as installed ("Existing").

Removing ``install`` during the install calls it off: the media go, the phase is dropped.
Which files the media hold is backends/installer_media.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from kvmrec.api.domain_parts import Disk
from kvmrec.api.installs import Install
from kvmrec.api.kinds import DomainSpec, RunStrategy
from kvmrec.backends import installer_media
from kvmrec.backends.libvirt.live import LiveDomain
from kvmrec.reconcilers.disk_paths import DiskPolicy, own_file
from kvmrec.reconcilers.domain_memory import (
    INSTALLED,
    INSTALLING,
    CrashLoop,
    DomainMemory,
    InstallPhase,
)
from kvmrec.reconcilers.kind import Turn
from kvmrec.reconcilers.plans import Plan, Step
from kvmrec.store.records import Drift, Status

Condition = tuple[str, str, str, str]
_CALLED_OFF = "spec.install was removed during the install"


@dataclass(frozen=True)
class Media:
    """The installer as this turn found it: what the guest boots, what is to be copied."""

    kernel: str | None = None  # location: the kernel the guest boots (a target, or in a tree)
    initrd: str | None = None
    copy: dict[str, str] = field(default_factory=dict)  # ISO member -> target, to copy out
    problem: str | None = None
    problem_reason: str = "InstallMediaMissing"
    owned: bool = False  # kernel and initrd are kvmrec's copies out of an ISO


def installing(memory: DomainMemory) -> bool:
    return memory.install is not None and memory.install.phase == INSTALLING


def condition(spec: DomainSpec, memory: DomainMemory, status: Status) -> tuple[Condition, ...]:
    """The ``Installed`` condition of a domain with an install phase."""
    phase = memory.install
    if phase is None:
        was = status.condition("Installed")
        if was is not None and was.reason == "Installing":
            return (("Installed", "False", "CalledOff", _CALLED_OFF),)
        return ()
    if phase.phase == INSTALLED:
        if phase.how == "Existing":
            said = "the domain existed before an install began: it is never sent to the installer"
            return (("Installed", "True", "Existing", said),)
        said = f"installed at {phase.since.isoformat()}; it boots from its disk"
        return (("Installed", "True", "Installed", said),)
    if spec.install is None:
        return (("Installed", "False", "CalledOff", _CALLED_OFF),)
    said = (
        f"booting the installer ({spec.install.field} {spec.install.source}) until it powers "
        "the guest off; then kvmrec boots it from its disk"
    )
    return (("Installed", "False", "Installing", said),)


class Installs:
    """The Domain kind's installs from media (a part of reconcilers/domain.py)."""

    _disks: DiskPolicy | None

    def _installer_targets(self, name: str) -> tuple[str, str]:
        return (
            own_file(self._disks, f"{name}-install-vmlinuz"),
            own_file(self._disks, f"{name}-install-initrd"),
        )

    # -- prepare: the phase, and the spec the guest is defined with in it ----------------

    def _install_prepare(
        self, turn: Turn[DomainSpec, LiveDomain], memory: DomainMemory, kvmrec_stopped: bool
    ) -> DomainMemory:
        """Bring the install phase up to date with what was observed; ``turn.spec`` becomes
        what the guest is to be defined with in that phase."""
        spec, live, now = turn.spec, turn.live, turn.now
        install, phase = spec.install, memory.install
        if install is None and phase is not None and phase.phase == INSTALLING and not phase.files:
            return replace(memory, install=None)  # called off, and nothing of it left to delete
        if install is None or (phase is not None and phase.phase == INSTALLED):
            return memory
        media = self._media(turn.name, install, memory)
        turn.notes["installer"] = media
        if phase is None:
            wanted = _with_media(spec, install, media)
            if live is None or _carries(live, wanted, install):
                phase = InstallPhase(INSTALLING, now)
            else:
                phase = InstallPhase(INSTALLED, now, how="Existing")
                return replace(memory, install=phase)
        if live is not None and live.active:
            phase = replace(phase, booted=True)
        elif (
            live is not None
            and phase.booted
            and live.state == "shutoff"
            and live.reason == "shutdown"
            and not kvmrec_stopped
            and spec.run_strategy is not RunStrategy.HALTED
        ):
            # The installer's end. The guest comes back from its disk (``restarting``: kvmrec
            # brings it back whatever the strategy), and it was no crash.
            turn.events.append(("Normal", "InstallEnded", "the installer powered the guest off"))
            phase = InstallPhase(INSTALLED, now, files=phase.files, how="Installed")
            return replace(memory, install=phase, crash=CrashLoop(), restarting=True)
        memory = replace(memory, install=replace(phase, files=_known(phase, media)))
        if media.problem is None:
            turn.spec = _with_media(spec, install, media)
        return memory

    def _media(self, name: str, install: Install, memory: DomainMemory) -> Media:
        """Where the installer is, and what of it is still to be copied out of an ISO."""
        source, where = install.source, install.field
        refused = self._disks.problem(source) if self._disks is not None else None
        if refused:
            return Media(problem=f"{where}: {refused}", problem_reason="DiskPathNotAllowed")
        if not os.path.exists(source):
            return Media(problem=f"{where}: {source} does not exist")
        if install.cdrom is not None:
            return Media()
        try:
            if os.path.isdir(source):
                boot = installer_media.find_in_tree(source)
                kernel = os.path.join(source, boot.kernel)
                initrd = os.path.join(source, boot.initrd)
                for path in (kernel, initrd):
                    refused = self._disks.problem(path) if self._disks is not None else None
                    if refused:
                        return Media(
                            problem=f"{where}: {refused}", problem_reason="DiskPathNotAllowed"
                        )
                return Media(kernel, initrd)
            boot = installer_media.find_in_iso(source)
        except installer_media.MediaError as exc:
            return Media(problem=f"{where}: {exc}", problem_reason="InstallMediaUnusable")
        kernel, initrd = self._installer_targets(name)
        copy: dict[str, str] = {}
        known = memory.install.files if memory.install is not None else ()
        for member, target in ((boot.kernel, kernel), (boot.initrd, initrd)):
            if not os.path.lexists(target):
                copy[member] = target
            elif target not in known and not installer_media.same(source, member, target):
                return Media(
                    problem=(
                        f"{where}: {target} exists and is not {member} of {source}; it is "
                        "left alone (move it away, or remove it)"
                    ),
                    problem_reason="InstallMediaUnusable",
                )
        return Media(kernel, initrd, copy, owned=True)

    # -- decide and act -------------------------------------------------------------------

    def _install_steps(
        self, turn: Turn[DomainSpec, LiveDomain], memory: DomainMemory
    ) -> tuple[list[Step], list[Step], Plan | None]:
        """Steps before the definition is written (copy the installer out), steps after
        (delete what was copied); or a plan blocked by the media."""
        phase, install = memory.install, turn.spec.install
        after: list[Step] = []
        if phase is not None and phase.files and (phase.phase == INSTALLED or install is None):
            after.append(Step("remove-installer", detail="delete " + ", ".join(phase.files)))
        media = turn.notes.get("installer")
        if not installing(memory) or install is None or not isinstance(media, Media):
            return [], after, None
        if media.problem is not None:
            return [], [], Plan(blocked=media.problem, blocked_reason=media.problem_reason)
        if not media.copy:
            return [], after, None
        copied = ", ".join(f"{m} to {t}" for m, t in media.copy.items())
        drift = Drift("spec.install.location", install.source, None)
        return [Step("extract-installer", (drift,), f"copy {copied}")], after, None

    def _install_act(self, turn: Turn[DomainSpec, LiveDomain], step: Step) -> str:
        memory: DomainMemory = turn.notes["memory"]
        phase = memory.install
        assert phase is not None
        if step.action == "extract-installer":
            media = turn.notes["installer"]
            assert isinstance(media, Media) and turn.spec.install is not None
            source = turn.spec.install.source
            installer_media.extract(source, media.copy)
            files = tuple(dict.fromkeys((*phase.files, *media.copy.values())))
            turn.notes["memory"] = replace(memory, install=replace(phase, files=files))
            return f"copied the installer's kernel and initrd out of {source}"
        removed = self._remove_installer_files(phase)
        called_off = phase.phase == INSTALLING
        turn.notes["memory"] = replace(
            memory, install=None if called_off else replace(phase, files=())
        )
        return "deleted the installer's kernel and initrd: " + (", ".join(removed) or "none left")

    @staticmethod
    def _remove_installer_files(phase: InstallPhase | None) -> list[str]:
        """Delete the files kvmrec copied out of an installer ISO; the paths deleted."""
        removed = []
        for path in phase.files if phase is not None else ():
            if os.path.lexists(path):
                os.unlink(path)
                removed.append(path)
        return removed


def _known(phase: InstallPhase, media: Media) -> tuple[str, ...]:
    """The files copied out so far: those recorded, and the targets found holding them."""
    if not media.owned:
        return phase.files
    present = [t for t in (media.kernel, media.initrd) if t and t not in media.copy.values()]
    return tuple(dict.fromkeys((*phase.files, *present)))


def _with_media(spec: DomainSpec, install: Install, media: Media) -> DomainSpec:
    """``spec`` as the guest is defined while it installs."""
    if install.cdrom is not None:
        cdrom = Disk(path=install.cdrom, format="raw", bus="sata", device="cdrom", read_only=True)
        boot = ("cdrom", *(b for b in spec.boot if b != "cdrom"))
        return replace(spec, disks=(*spec.disks, cdrom), boot=boot, on_reboot="destroy")
    return replace(
        spec,
        kernel=media.kernel,
        initrd=media.initrd,
        cmdline=install.extra_args,
        on_reboot="destroy",
    )


def _carries(live: LiveDomain, wanted: DomainSpec, install: Install) -> bool:
    """The definition still has the installer in it (the install was under way)."""
    config = live.config
    if install.cdrom is not None:
        return any(d.path == install.cdrom for d in config.disks) and config.boot[:1] == ("cdrom",)
    return wanted.kernel is not None and config.kernel == wanted.kernel


def phase_started(memory: DomainMemory) -> DomainMemory:
    """kvmrec started the guest: while it installs, that is the installer's boot."""
    if installing(memory) and memory.install is not None:
        return replace(memory, install=replace(memory.install, booted=True))
    return memory
