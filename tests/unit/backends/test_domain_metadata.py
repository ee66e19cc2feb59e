"""The libosinfo metadata and the machine type in domain XML, written and read back."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace

from kvmrec.api.domain_parts import Disk
from kvmrec.api.kinds import DomainSpec
from kvmrec.backends import domain_xml
from kvmrec.backends.domain_metadata import LIBOSINFO_NS, Owner

OWNER = Owner("Domain", "web", "uid-1", 3, "abc")
SPEC = DomainSpec(memory=2**30, os_variant="debian11", os_id="http://debian.org/debian/11")


def test_the_os_is_recorded_as_virt_install_records_it_beside_the_stamp() -> None:
    xml = domain_xml.build("web", replace(SPEC, machine="q35"), OWNER)
    metadata = ET.fromstring(xml).find("metadata")
    assert metadata is not None
    tags = [child.tag for child in metadata]
    assert tags == [f"{{{domain_xml.OWNER_NS}}}owner", f"{{{LIBOSINFO_NS}}}libosinfo"]
    text = ET.tostring(metadata[1], encoding="unicode")
    assert text == (
        '<libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">'
        '<libosinfo:os id="http://debian.org/debian/11" /></libosinfo:libosinfo>'
    )
    config = domain_xml.parse(xml)
    assert config.os_id == "http://debian.org/debian/11"
    assert config.owner == OWNER
    assert config.machine == "q35"


def test_a_virt_install_definition_is_read() -> None:
    xml = (
        "<domain type='kvm'><name>vm</name><metadata>"
        '<libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">'
        '<libosinfo:os id="http://debian.org/debian/11"/></libosinfo:libosinfo></metadata>'
        "<os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os></domain>"
    )
    config = domain_xml.parse(xml)
    assert (config.os_id, config.machine, config.owner) == (
        "http://debian.org/debian/11",
        "q35",
        None,
    )
    assert domain_xml.parse(xml.replace("pc-q35-7.2", "pc-i440fx-7.2")).machine == "pc"


def test_no_variant_and_no_machine_write_neither() -> None:
    xml = domain_xml.build("web", DomainSpec(memory=2**30), None)
    root = ET.fromstring(xml)
    assert root.find("metadata") is None
    type_ = root.find("os/type")
    assert type_ is not None and "machine" not in type_.attrib
    config = domain_xml.parse(xml)
    assert config.os_id is None and config.machine is None


def test_the_seed_is_attached_after_the_disks_with_its_digest_as_serial() -> None:
    seed = Disk(
        path="/var/lib/libvirt/images/web-cidata.iso",
        format="raw",
        bus="sata",
        device="cdrom",
        read_only=True,
        serial="0123456789abcdef0123",
    )
    disks = (Disk(path="/var/lib/libvirt/images/web.qcow2"),)
    spec = replace(SPEC, disks=disks, seed=seed)
    config = domain_xml.parse(domain_xml.build("web", spec, OWNER))
    assert config.disks == (disks[0].attachment(), seed)
