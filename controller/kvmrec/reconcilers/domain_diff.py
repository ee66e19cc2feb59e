"""Comparing a Domain's manifest with its libvirt definition, field by field.

Both sides are parsed into the same model (intent only): controllers, PCI addresses,
aliases and the MACs of interfaces kvmrec did not add never count as drift. A running
guest's differences split into what it takes live and what needs a restart; the run state
a manifest asks for follows ``runStrategy`` (KubeVirt's meanings).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from kvmrec.api import quantities
from kvmrec.api.domain_parts import Cpu, Disk, Interface
from kvmrec.api.kinds import DomainSpec, RunStrategy
from kvmrec.backends import cpu_xml
from kvmrec.backends.domain_xml import DomainConfig
from kvmrec.backends.libvirt.live import LiveDomain
from kvmrec.reconcilers.domain_memory import DomainMemory
from kvmrec.store.records import Drift


def mem(nbytes: int) -> str:
    return quantities.format_bytes(nbytes)


def by_bus(disks: Iterable[Disk]) -> tuple[Disk, ...]:
    # libvirt keeps a domain's disks grouped by bus; only the order within a bus matters.
    return tuple(sorted(disks, key=lambda d: d.bus))


def disk_view(disks: Iterable[Disk]) -> list[dict[str, Any]]:
    view = []
    for d in disks:
        item: dict[str, Any] = {"path": d.path} if d.path else {"pool": d.pool, "volume": d.volume}
        item.update(format=d.format, bus=d.bus, device=d.device, readOnly=d.read_only)
        view.append(item)
    return view


def seed_view(seed: Disk) -> dict[str, Any]:
    """The cloud-init seed as attached: where, how, and its content digest."""
    return {"path": seed.path, "bus": seed.bus, "digest": seed.serial}


def iface_key(i: Interface) -> tuple[Any, ...]:
    """What must match for an interface to be the one asked for (its name is kvmrec's)."""
    return (i.mac, i.network, i.bridge, i.virtualport, i.model, i.dev, i.mode, i.address, i.vlan)


def iface_view(ifaces: Iterable[Interface]) -> list[dict[str, Any]]:
    view = []
    for i in ifaces:
        item: dict[str, Any] = {"mac": i.mac}
        if i.name:
            item["name"] = i.name
        if i.type in ("direct", "hostdev"):
            item["type"] = i.type
            source = {"dev": i.dev, "mode": i.mode} if i.dev else {"address": i.address}
            item["source"] = source
            if i.vlan is not None:
                item["vlan"] = i.vlan
        else:
            item.update({"network": i.network} if i.network else {"bridge": i.bridge})
        if i.virtualport:
            item["virtualport"] = i.virtualport
        if i.model:
            item["model"] = i.model
        view.append(item)
    return view


def cpu_view(cpu: Cpu | None) -> dict[str, Any] | None:
    """A CPU as the manifest writes it; None for QEMU's default."""
    if cpu is None or cpu_xml.is_default(cpu):
        return None
    view: dict[str, Any] = {"mode": cpu.mode}
    if cpu.model is not None:
        view["model"] = cpu.model
    if cpu.features:
        view["features"] = [{"name": f.name, "policy": f.policy} for f in cpu.features]
    return view


def diff_config(spec: DomainSpec, config: DomainConfig) -> list[Drift]:
    """Fields of a definition that differ from the spec, named as in the manifest."""
    drift: list[Drift] = []

    def check(field: str, desired: Any, actual: Any) -> None:
        if desired != actual:
            drift.append(Drift(field, desired, actual))

    check("spec.type", spec.type, config.type)
    check("spec.vcpus", spec.vcpus, config.vcpus)
    check("spec.maxVcpus", spec.vcpus_max, config.vcpus_max)
    if quantities.to_kib(spec.memory) * 1024 != config.memory:
        drift.append(Drift("spec.memory", mem(spec.memory), mem(config.memory)))
    if quantities.to_kib(spec.memory_max) * 1024 != config.memory_max:
        drift.append(Drift("spec.maxMemory", mem(spec.memory_max), mem(config.memory_max)))
    check("spec.console", spec.console, config.console)
    if spec.graphics != config.graphics:
        desired = {"type": spec.graphics.type}
        actual = {"type": config.graphics.type}
        if spec.graphics.type == "vnc":
            desired["listen"] = spec.graphics.listen
        if config.graphics.type == "vnc":
            actual["listen"] = config.graphics.listen
        check("spec.graphics", desired, actual)
    check("spec.cpu", cpu_view(spec.cpu), cpu_view(config.cpu))  # never live: a restart
    check("spec.guestAgent", spec.guest_agent, config.guest_agent)
    check("spec.os.firmware", spec.firmware, config.firmware)
    check("spec.os.boot", list(spec.boot), list(config.boot))
    check("spec.os.kernel", spec.kernel, config.kernel)
    check("spec.os.initrd", spec.initrd, config.initrd)
    check("spec.os.cmdline", spec.cmdline, config.cmdline)
    if spec.machine is not None:
        check("spec.os.machine", spec.machine, config.machine)
    if spec.os_id is not None:
        check("spec.osVariant", spec.os_id, config.os_id)
    seed_path = spec.seed.path if spec.seed is not None else None
    # Only the seed's serial is kvmrec's (its digest); another disk's is not modelled.
    disks = tuple(
        replace(d, serial=None) for d in config.disks if seed_path is None or d.path != seed_path
    )
    wanted = by_bus(d.attachment() for d in spec.disks)
    if wanted != by_bus(disks):
        drift.append(Drift("spec.disks", disk_view(wanted), disk_view(by_bus(disks))))
    if spec.seed is not None:
        attached = [d for d in config.disks if d.path == seed_path]
        check("spec.cloudInit", seed_view(spec.seed), seed_view(attached[0]) if attached else None)
    if [iface_key(i) for i in spec.interfaces] != [iface_key(i) for i in config.interfaces]:
        drift.append(
            Drift("spec.interfaces", iface_view(spec.interfaces), iface_view(config.interfaces))
        )
    return drift


def live_class(spec: DomainSpec, running: DomainConfig) -> tuple[list[Drift], list[Drift]]:
    """Split the differences of a running guest into (applied live, needs a restart)."""
    hot = {
        "spec.vcpus": spec.vcpus <= running.vcpus_max,
        "spec.memory": running.balloon and spec.memory <= running.memory_max,
        # Hot-plug; an unplug that the guest refuses shows up again and needs a restart.
        "spec.interfaces": True,
    }
    live: list[Drift] = []
    restart: list[Drift] = []
    for d in diff_config(spec, running):
        if d.field == "spec.osVariant":
            continue  # metadata of the definition: nothing the running guest uses
        (live if hot.get(d.field, False) else restart).append(d)
    return live, restart


def state_of(live: LiveDomain) -> str:
    return f"it is {live.state} ({live.reason})"


def drift_key(drift: Iterable[Drift]) -> list[str]:
    return sorted(f"{d.field}={d.actual!r}" for d in drift)


def wants_running(
    spec: DomainSpec, live: LiveDomain | None, memory: DomainMemory, generation: int
) -> bool | None:
    """True: keep it running; False: keep it off; None: leave the run state alone."""
    if memory.restarting:
        return True  # powered off by kvmrec to apply a change: it comes back whatever the strategy
    strategy = spec.run_strategy
    if strategy is RunStrategy.ALWAYS:
        return True
    if strategy is RunStrategy.HALTED:
        return False
    if strategy is RunStrategy.RERUN_ON_FAILURE:
        # A guest that shut itself down has finished; anything else stopping it is a failure.
        return not (live is not None and live.state == "shutoff" and live.reason == "shutdown")
    if strategy is RunStrategy.ONCE:
        return None if memory.once_generation == generation else True
    return None
