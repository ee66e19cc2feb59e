"""The lab's hosts are hypervisors of their own: each runs guests at once, none sees
another's guests or the system libvirtd's, and the system libvirtd does not see theirs."""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import libvirt
import pytest

from support.lab import Lab, LabGuests

pytestmark = pytest.mark.integration


def host_uuid(conn: Any) -> str:
    found = re.search(r"<host>\s*<uuid>([^<]+)</uuid>", conn.getCapabilities())
    assert found, "no host uuid in the capabilities"
    return found.group(1)


def test_every_lab_host_runs_a_guest_at_once(lab: Lab, lab_guests: LabGuests) -> None:
    assert len(lab.hosts) >= 3
    with ThreadPoolExecutor(len(lab.hosts)) as pool:
        list(pool.map(lambda host: lab_guests.start(host, host), lab.hosts))
    for host in lab.hosts:
        running = {n for n in lab_guests.names(host) if n.startswith(lab_guests.prefix)}
        assert running == {lab_guests.name(host)}, host
        dom = lab_guests.conn(host).lookupByName(lab_guests.name(host))
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        # The guest's console log is the host's own virtlogd's, under the host's dir.
        log = lab.host_dir(host) / "log" / "libvirt" / "qemu" / f"{dom.name()}.log"
        assert log.exists(), log
        # Its QEMU runs inside the host's own mount namespace.
        pid = lab.qemu_pid(host, dom.name())
        assert os.readlink(f"/proc/{pid}/ns/mnt") == lab.mount_namespace(host)
    # Each host has an identity of its own.
    uuids = {host_uuid(lab_guests.conn(host)) for host in lab.hosts}
    assert len(uuids) == len(lab.hosts)


def test_the_system_libvirtd_is_unaffected_by_the_lab(
    lab: Lab, lab_guests: LabGuests, conn: Any, prefix: str
) -> None:
    system_pid = Path("/run/libvirtd.pid").read_text().strip()
    system_before = {d.UUIDString(): d.name() for d in conn.listAllDomains(0)}
    # A guest of the system libvirtd and one on a lab host, under the same prefix.
    conn.defineXML(
        f"<domain type='{lab.domain_type}'><name>{prefix}-system</name>"
        "<memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os>"
        "<devices><memballoon model='none'/></devices></domain>"
    )
    lab_guests.start("lab1", "lab")

    system_after = {d.UUIDString(): d.name() for d in conn.listAllDomains(0)}
    assert lab_guests.name("lab") not in system_after.values()
    assert f"{prefix}-system" in system_after.values()
    # Whatever others did meanwhile, the system's own guests (not the tests') are all there.
    lasting = {u: n for u, n in system_before.items() if not n.startswith(("kt-", "kvmrec-test-"))}
    assert lasting.items() <= system_after.items()
    assert host_uuid(conn) not in {host_uuid(lab_guests.conn(h)) for h in lab.hosts}
    for host in lab.hosts:
        seen = lab_guests.names(host, active_only=False)
        assert f"{prefix}-system" not in seen, host
        assert not seen & set(lasting.values()), host
    assert Path("/run/libvirtd.pid").read_text().strip() == system_pid
