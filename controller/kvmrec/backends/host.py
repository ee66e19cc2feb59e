"""Facts about the host itself that neither libvirt nor OVSDB answers."""

from __future__ import annotations

import os


def net_device_exists(name: str) -> bool:
    """Whether a network device (a Linux bridge, an OVS bridge's port) exists here."""
    return bool(name) and "/" not in name and os.path.exists(f"/sys/class/net/{name}")


def pci_device_exists(address: str) -> bool:
    """Whether the host has a PCI device (an SR-IOV VF) at ``0000:03:10.2``."""
    return (
        bool(address) and "/" not in address and os.path.exists(f"/sys/bus/pci/devices/{address}")
    )


def kernel_datapath() -> bool:
    """Whether Open vSwitch bridges of datapath type "system" (the kernel's) can work here.

    Not ``Open_vSwitch.datapath_types``: that lists the datapath classes built into
    ovs-vswitchd, "system" included on every Linux build, module loaded or not (on a kernel
    without it: ``[netdev, system]``, while a system bridge gets no ofport and the log says
    "failed to open datapath of type system"). ovs-vswitchd does not load the module itself;
    whether it is loaded is the question.
    """
    return os.path.isdir("/sys/module/openvswitch")


# -- what the host checks (kvmrec doctor) read from /sys, /proc and /dev --------------------

VENDOR_MODULES = ("kvm_intel", "kvm_amd", "kvm_pvm")  # VT-x, AMD-V, PVM (no VT-x needed)


def loaded_modules(names: tuple[str, ...]) -> list[str]:
    """Of ``names``, the kernel modules that are loaded (or built in) here."""
    return [name for name in names if os.path.isdir(f"/sys/module/{name}")]


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The flags of the first CPU in /proc/cpuinfo (every CPU of a host has the same)."""
    try:
        with open(cpuinfo) as text:
            for line in text:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def nested_parameter(module: str) -> str | None:
    """``/sys/module/MODULE/parameters/nested`` ("Y", "1", "N", "0"); None without one."""
    try:
        with open(f"/sys/module/{module}/parameters/nested") as text:
            return text.read().strip()
    except OSError:
        return None
