"""What a snapshot's XML says about restoring it, and domain states as words on the test
driver."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import libvirt
import pytest

from kvmrec.backends import snapshot_state
from kvmrec.backends.libvirt.hypervisor import Hypervisor


def _snapshot_xml(vcpus: str, memory: str = "internal", state: str = "running") -> str:
    return f"""<domainsnapshot><name>s1</name><description>d</description>
      <state>{state}</state><creationTime>1796116626</creationTime>
      <memory snapshot='{memory}'/>
      <domain type='kvm'><name>g</name><vcpu placement='static'>2</vcpu>
        <vcpus>{vcpus}</vcpus></domain>
      <inactiveDomain type='kvm'><name>g</name><vcpu>2</vcpu></inactiveDomain>
    </domainsnapshot>"""


BOOTED_ONE = "<vcpu id='0' enabled='yes' hotpluggable='no' order='1'/>"
PLUGGED = "<vcpu id='1' enabled='yes' hotpluggable='yes' order='2'/>"
UNPLUGGED = "<vcpu id='1' enabled='no' hotpluggable='yes'/>"


def test_a_memory_snapshot_with_a_hot_plugged_vcpu_cannot_be_restored() -> None:
    info = snapshot_state.parse(_snapshot_xml(BOOTED_ONE + PLUGGED))
    assert info.memory and info.state == "running"
    assert info.restore_problem is not None
    assert "2 vCPUs, 1 of them hot-plugged" in info.restore_problem
    assert "the 1 the guest booted with" in info.restore_problem


def test_a_snapshot_whose_vcpus_were_all_there_at_boot_can_be_restored() -> None:
    assert snapshot_state.parse(_snapshot_xml(BOOTED_ONE + UNPLUGGED)).restore_problem is None
    booted_two = BOOTED_ONE + "<vcpu id='1' enabled='yes' hotpluggable='no' order='2'/>"
    assert snapshot_state.parse(_snapshot_xml(booted_two)).restore_problem is None


def test_a_disk_only_snapshot_has_no_memory_state_to_restore() -> None:
    info = snapshot_state.parse(_snapshot_xml(BOOTED_ONE + PLUGGED, "no", "shutoff"))
    assert not info.memory and info.restore_problem is None


def test_qemus_words_are_taken_out_of_libvirts_message() -> None:
    message = (
        "revert g to s1: internal error: qemu unexpectedly closed the monitor: "
        "2026-12-01T09:17:08.194839Z qemu-system-x86_64: Unknown savevm section or "
        "instance 'cpu_common' 1. Make sure that your current VM setup matches\n"
        "2026-12-01T09:17:08.195157Z qemu-system-x86_64: Error -22 while loading VM state"
    )
    assert snapshot_state.qemu_reason(message) == (
        "Unknown savevm section or instance 'cpu_common' 1. Make sure that your current "
        "VM setup matches; Error -22 while loading VM state"
    )
    assert snapshot_state.qemu_reason("no such snapshot") == "no such snapshot"


@pytest.fixture
def hypervisor() -> Iterator[tuple[Hypervisor, str]]:
    name = f"ut-{uuid.uuid4().hex[:8]}-words"
    conn = libvirt.open("test:///default")
    conn.defineXML(
        f"<domain type='test'><name>{name}</name><memory>65536</memory>"
        "<os><type>hvm</type></os></domain>"
    )
    hv = Hypervisor("test:///default")
    hv.open()
    yield hv, name
    hv.close()
    dom = conn.lookupByName(name)
    if dom.isActive():
        dom.destroy()
    dom.undefine()
    conn.close()


def test_live_domains_carry_their_state_reason_as_a_word(
    hypervisor: tuple[Hypervisor, str],
) -> None:
    hv, name = hypervisor
    hv.start_domain(name)
    live = hv.get_domain(name)
    assert live is not None and (live.state, live.reason) == ("running", "booted")
    assert not live.busy and not live.paused_for_job
    hv.destroy_domain(name)
    live = hv.get_domain(name)
    assert live is not None and (live.state, live.reason) == ("shutoff", "destroyed")
