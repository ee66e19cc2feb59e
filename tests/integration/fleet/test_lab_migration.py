"""The lab is fit for live migration: a tiny guest moves from lab1 to lab2 peer to peer,
QEMU's stream on 127.0.0.1 (each host has a migration port range of its own)."""

from __future__ import annotations

import libvirt
import pytest

from support.lab import Lab, LabGuests

pytestmark = pytest.mark.integration


def test_a_guest_migrates_live_from_lab1_to_lab2(lab: Lab, lab_guests: LabGuests) -> None:
    dom = lab_guests.start("lab1", "mig")
    name = dom.name()
    dom.migrateToURI3(
        lab.uris["lab2"],
        {libvirt.VIR_MIGRATE_PARAM_URI: "tcp://127.0.0.1"},
        libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER,
    )
    assert name not in lab_guests.names("lab1")
    moved = lab_guests.conn("lab2").lookupByName(name)
    assert moved.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    stats = moved.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    assert stats.get("operation") == libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN
    assert stats.get("memory_processed", 0) > 0
