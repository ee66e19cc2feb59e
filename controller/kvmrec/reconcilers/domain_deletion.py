"""Deleting a Domain: power the guest off cleanly first, then undefine it and delete the
disk images its manifest asks for (a part of reconcilers/domain.py).

The generic layer (reconcilers/reconciling.py) decides orphan or delete from the stamp and
``deletionPolicy``; this holds a delete while the guest powers off (reconcilers/stopping.py)
and does it. Only images under the disk roots are ever deleted (reconcilers/domain_images.py).
"""

from __future__ import annotations

import logging
from dataclasses import replace

from kvmrec.api.kinds import DomainSpec
from kvmrec.backends import images
from kvmrec.backends.libvirt.live import LiveDomain
from kvmrec.reconcilers import recording, stopping
from kvmrec.reconcilers.domain_images import DiskImages
from kvmrec.reconcilers.domain_memory import DomainMemory
from kvmrec.reconcilers.installs import Installs
from kvmrec.reconcilers.kind import Turn
from kvmrec.reconcilers.plans import Plan, Step
from kvmrec.reconcilers.seeds import Seeds
from kvmrec.store.records import Status

log = logging.getLogger("kvmrec.reconcilers.domain")


class DomainDeletion(DiskImages, Seeds, Installs):
    """The Domain kind's deletion (a part of reconcilers/domain.py)."""

    _stopper: stopping.Stopper

    # -- deletion ------------------------------------------------------------------------

    def deletion(self, turn: Turn[DomainSpec, LiveDomain]) -> Plan | None:
        if turn.live is None:
            return Plan(steps=(Step("gone", visible=False),))
        return None  # by its stamp and deletionPolicy

    def delete_detail(self, turn: Turn[DomainSpec, LiveDomain], detail: str) -> str:
        doomed = [d.source for d in turn.spec.disks if self._deletable(d)]
        if turn.spec.seed is not None and turn.spec.seed.path is not None:
            doomed.append(turn.spec.seed.path)
        return detail + (f"; delete {', '.join(doomed)}" if doomed else "")

    def held(self, turn: Turn[DomainSpec, LiveDomain], plan: Plan) -> tuple[Status, float] | None:
        """A guest to delete is powered off first, cleanly (reconcilers/stopping.py)."""
        live, spec, name, now = turn.live, turn.spec, turn.name, turn.now
        turn.notes["stopped"] = ""
        if live is None or not plan.steps or plan.steps[0].action != "delete":
            return None
        memory = DomainMemory.load(turn.status.details)
        if live.active:
            message, memory = self._stopper.step(name, spec, live, memory, now, "delete")
            if memory.stopping is not None:
                # Not off yet: the guest's STOPPED event or the next step brings us back.
                if message:
                    turn.events.append(("Normal", "Stopping", message))
                status = recording.deletion_held(
                    replace(turn.status, details=memory.into(turn.status.details)),
                    "Stopping",
                    "powering the guest off before deleting it",
                    now,
                )
                return status, self._stopper.next_step_in(spec, memory.stopping, now)
            turn.notes["stopped"] = f"; {message}"
        elif memory.stopping is not None:
            turn.notes["stopped"] = f"; {stopping.finished(live, memory, now)[0]}"
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
        seed = self._delete_seed(name, spec)
        if seed is not None:
            removed.append(seed)
        removed += self._remove_installer_files(DomainMemory.load(turn.status.details).install)
        kept = "; deleted images " + ", ".join(removed) if removed else " (disk images kept)"
        what = f"domain {name}"
        if live.config.owner is not None and live.config.owner.adopted:
            what += ", which kvmrec adopted and did not create"
        return f"undefined {what}{turn.notes.get('stopped', '')}{kept}"
