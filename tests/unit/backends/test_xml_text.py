"""The fast XML writer writes what ``ET.tostring(root, encoding="unicode")`` writes."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from kvmrec.api import schema
from kvmrec.api.kinds import DomainSpec
from kvmrec.backends import domain_xml, xml_text
from kvmrec.backends.cpu_xml import CPU_NS
from kvmrec.backends.domain_metadata import LIBOSINFO_NS, OWNER_NS, Owner

REFERENCE = Path(__file__).resolve().parents[3] / "manifests"
DOMAINS = [
    doc
    for path in sorted(REFERENCE.rglob("*.yaml"))
    for doc in yaml.safe_load_all(path.read_text())
    if isinstance(doc, dict) and doc.get("kind") == "Domain"
]


def standard(root: ET.Element) -> str:
    return ET.tostring(root, encoding="unicode")


@pytest.mark.parametrize("index", range(len(DOMAINS)))
def test_a_reference_domains_definition_is_written_as_the_standard_library_writes_it(
    index: int,
) -> None:
    doc = DOMAINS[index]
    full = schema.with_defaults(schema.registry()["Domain"], doc)
    spec = DomainSpec.from_spec(full["spec"], doc["metadata"]["name"])
    owner = Owner("Domain", doc["metadata"]["name"], "u-1", 3, "d" * 64, adopted=True)
    text = domain_xml.build(doc["metadata"]["name"], spec, owner)
    assert text == standard(ET.fromstring(text))


def written(root: ET.Element) -> str:
    """``root`` written as a Document of its children."""
    doc = xml_text.Document(str(root.tag), dict(root.attrib))
    for child in root:
        doc.element(child)
    return doc.tostring()


def test_escapes_namespaces_and_empty_elements_match() -> None:
    root = ET.Element("domain", {"type": "kvm", "note": 'a"b<c>&d\r\n\te'})
    ET.SubElement(root, "name").text = 'x & <y> "z"'
    empty = ET.SubElement(root, "empty")
    empty.tail = "tail & more"
    ET.SubElement(root, "blank").text = ""
    meta = ET.SubElement(root, "metadata")
    ET.SubElement(meta, f"{{{OWNER_NS}}}owner", {"name": "n"})
    ET.SubElement(meta, f"{{{LIBOSINFO_NS}}}libosinfo")
    ET.SubElement(meta, f"{{{CPU_NS}}}cpu", {f"{{{OWNER_NS}}}k": "v"})
    assert written(root) == standard(root)


def test_a_document_written_in_pieces_is_the_tree_the_standard_library_writes() -> None:
    root = ET.Element("domain", {"type": 'k"v'})
    ET.SubElement(root, "name").text = "a & <b>"
    meta = ET.SubElement(root, "metadata")
    ET.SubElement(meta, f"{{{OWNER_NS}}}owner", {"name": "n"})
    ET.SubElement(meta, f"{{{CPU_NS}}}cpu", {"mode": "custom"})
    ET.SubElement(root, "empty")

    doc = xml_text.Document("domain", {"type": 'k"v'})
    doc.markup(f"<name>{xml_text.text('a & <b>')}</name><metadata>")
    for element in meta:
        doc.element(element)  # the namespaces they use go on the root
    doc.markup("</metadata><empty />")
    assert doc.tostring() == standard(root)
    assert xml_text.Document("e", {}).tostring() == standard(ET.Element("e"))
    assert xml_text.attribute('a"b\n') == "a&quot;b&#10;" and xml_text.text("plain") == "plain"


def test_a_document_refuses_what_it_cannot_write() -> None:
    for unknown in (ET.Element("{urn:unregistered}x"), ET.Comment("a comment")):
        with pytest.raises(ValueError, match="cannot write"):
            xml_text.Document("domain", {}).element(unknown)
