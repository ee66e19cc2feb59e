"""Adopting: kvmrec taking over a domain, network or bridge it did not create.

An object of a manifest's name that exists without kvmrec's stamp is a conflict, left
alone, unless the manifest says ``kvmrec.io/adopt: "true"``. Taking it over is then a step
of its own (``adopt``), so ``kvmrec plan`` shows it before the service does it, with what
removing the manifest would later do to it. The stamp remembers the adoption
(``adopted``) for as long as kvmrec manages the object: a removal with
``deletionPolicy: Delete`` would destroy something kvmrec never created, and the plan and
the event of that deletion say so. Only the stamp makes an object kvmrec's to delete: an
adoption that never happened deletes nothing.

``kvmrec import`` writes the manifest that adopts an existing domain as it is, with
``deletionPolicy: Orphan``, so removing it gives the guest back instead of destroying it.
"""

from __future__ import annotations

from typing import Any

from kvmrec.api import osinfo, quantities
from kvmrec.api.kinds import ADOPT_ANNOTATION, DeletionPolicy
from kvmrec.backends.domain_xml import Owner
from kvmrec.backends.libvirt.live import LiveDomain
from kvmrec.reconcilers.domain_diff import cpu_view
from kvmrec.reconcilers.plans import Step


def stamped_for(owner: Owner | None, kind: str, name: str) -> bool:
    """The stamp says the object belongs to this manifest."""
    return owner is not None and owner.kind == kind and owner.name == name


def adopted(owner: Owner | None, kind: str, name: str) -> bool:
    """An existing object with this stamp is kvmrec's by adoption (or is about to be)."""
    return not stamped_for(owner, kind, name) or (owner is not None and owner.adopted)


def _afterwards(removal: str, policy: DeletionPolicy) -> str:
    if policy is DeletionPolicy.ORPHAN:
        return "removing the manifest then leaves it as it is (deletionPolicy: Orphan)"
    return f"removing the manifest would then {removal} it (deletionPolicy: Delete)"


def step(what: str, name: str, removal: str, policy: DeletionPolicy) -> Step:
    """The plan's ``adopt`` step; ``removal`` says what ``deletionPolicy: Delete`` does
    ("destroy and undefine")."""
    return Step(
        "adopt",
        detail=(
            f"take over {what} {name}, which kvmrec did not create; " + _afterwards(removal, policy)
        ),
    )


def adopted_event(what: str, name: str, policy: DeletionPolicy) -> str:
    return (
        f"took ownership of {what} {name}, which kvmrec did not create (deletionPolicy: {policy})"
    )


def deletion(what: str, name: str, removal: str) -> str:
    """What the plan says deleting an adopted object does."""
    return (
        f"{removal} {what} {name}, which kvmrec adopted and did not create "
        "(deletionPolicy: Delete; Orphan would leave it)"
    )


def manifest_for(live: LiveDomain) -> dict[str, Any]:
    """A manifest that describes ``live`` as it is (intent only: the fields kvmrec manages,
    none of libvirt's defaults), annotated to adopt it and to orphan it when removed.
    ``plan`` on it reports the adoption and nothing else."""
    config = live.config
    spec: dict[str, Any] = {
        "deletionPolicy": DeletionPolicy.ORPHAN.value,
        "type": config.type,
        "vcpus": config.vcpus,
        "memory": quantities.format_bytes(config.memory),
        "runStrategy": "Always" if live.state in ("running", "paused") else "Halted",
        "autostart": live.autostart,
        "console": config.console,
    }
    if config.vcpus_max != config.vcpus:
        spec["maxVcpus"] = config.vcpus_max
    if config.memory_max != config.memory:
        spec["maxMemory"] = quantities.format_bytes(config.memory_max)
    if config.graphics.type == "vnc":
        spec["graphics"] = {"type": "vnc", "listen": config.graphics.listen}
    if config.guest_agent:
        spec["guestAgent"] = True
    cpu = cpu_view(config.cpu)
    if cpu is not None:
        spec["cpu"] = cpu
    os_: dict[str, Any] = {}
    if config.firmware != "bios":
        os_["firmware"] = config.firmware
    if list(config.boot) != ["hd"]:
        os_["boot"] = list(config.boot)
    for field in ("kernel", "initrd", "cmdline"):
        if getattr(config, field) is not None:
            os_[field] = getattr(config, field)
    known = osinfo.database().by_id(config.os_id) if config.os_id else None
    if known is not None:
        # What the variant would default is written as it is, so adopting changes nothing.
        spec["osVariant"] = known.short_id
        os_["firmware"] = config.firmware
        if config.machine is not None:
            os_["machine"] = config.machine
    if os_:
        spec["os"] = os_
    disks = []
    for disk in config.disks:
        if disk.path is None and disk.pool is None:
            continue  # an empty drive: reported by the caller, not expressible
        item: dict[str, Any] = (
            {"path": disk.path} if disk.path else {"pool": disk.pool, "volume": disk.volume}
        )
        if disk.device == "cdrom":
            item["device"] = "cdrom"
            item["bus"] = disk.bus
        else:
            item.update(format=disk.format, bus=disk.bus)
            if disk.read_only:
                item["readOnly"] = True
        disks.append(item)
    if disks:
        spec["disks"] = disks
    interfaces = []
    for index, iface in enumerate(config.interfaces):
        item = {"name": f"net{index}", "mac": iface.mac}
        if iface.type == "direct":
            item.update(type="direct", source={"dev": iface.dev, "mode": iface.mode})
        elif iface.type == "hostdev":
            item.update(type="hostdev", source={"address": iface.address})
            if iface.vlan is not None:
                item["vlan"] = iface.vlan
        else:
            item.update({"network": iface.network} if iface.network else {"bridge": iface.bridge})
        if iface.virtualport and not iface.network:
            item["virtualport"] = iface.virtualport
        if iface.model:
            item["model"] = iface.model
        interfaces.append(item)
    if interfaces:
        spec["interfaces"] = interfaces
    return {
        "apiVersion": "kvmrec.io/v1alpha1",
        "kind": "Domain",
        "metadata": {"name": config.name, "annotations": {ADOPT_ANNOTATION: "true"}},
        "spec": spec,
    }
