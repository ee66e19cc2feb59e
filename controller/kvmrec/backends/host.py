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
