"""The inventory a fleet host registers, read from libvirt's test driver."""

from __future__ import annotations

from kvmrec.backends.libvirt.hypervisor import Hypervisor


def test_inventory_reports_the_test_hosts_memory_cpus_and_guest_types() -> None:
    hypervisor = Hypervisor("test:///default")
    hypervisor.open()
    try:
        inventory = hypervisor.inventory()
    finally:
        hypervisor.close()
    # The test driver's node: 16 CPUs, 3 GiB (libvirt's src/test/test_driver.c defaults).
    assert inventory.vcpus == 16
    assert inventory.memory_bytes == 3 * 1024**3
    assert inventory.domain_types == frozenset({"test"})
    assert inventory.hostname
