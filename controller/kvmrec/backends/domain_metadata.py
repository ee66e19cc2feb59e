"""What a domain's ``<metadata>`` holds for kvmrec: its ownership stamp and the libosinfo OS.

The stamp is an element in kvmrec's own XML namespace (domains and networks alike). The
OS is recorded exactly as virt-install records ``--os-variant``, so virt-manager, virt-install
and other libosinfo-aware tools read it::

    <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
      <libosinfo:os id="http://debian.org/debian/11"/>
    </libosinfo:libosinfo>

Both live side by side in one ``<metadata>``; each is read back by its namespace, so the
elements of other tools there are never touched or counted.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from kvmrec.backends import xml_text

OWNER_NS = "https://kvmrec.io/xmlns/owner/v1alpha1"
OWNER_PREFIX = "kvmrec"
LIBOSINFO_NS = "http://libosinfo.org/xmlns/libvirt/domain/1.0"
LIBOSINFO_PREFIX = "libosinfo"

xml_text.register_namespace(OWNER_PREFIX, OWNER_NS)
xml_text.register_namespace(LIBOSINFO_PREFIX, LIBOSINFO_NS)


@dataclass(frozen=True)
class Owner:
    """kvmrec's stamp on an object it manages. ``adopted``: kvmrec took the object over
    (``kvmrec.io/adopt``) instead of creating it; the stamp keeps that for as long as kvmrec
    manages it, so a deletion can say what it would destroy."""

    kind: str
    name: str
    uid: str
    generation: int
    digest: str
    adopted: bool = False


def owner_xml(owner: Owner) -> str:
    """The stamp as a standalone element for ``virDomainSetMetadata``, which puts it in
    kvmrec's namespace itself (and refuses an element that declares one)."""
    element = owner_element(owner)
    element.tag = "owner"
    return ET.tostring(element, encoding="unicode")


def owner_element(owner: Owner) -> ET.Element:
    """kvmrec's stamp, in its own XML namespace (domains and networks alike)."""
    attributes = {
        "kind": owner.kind,
        "name": owner.name,
        "uid": owner.uid,
        "generation": str(owner.generation),
        "digest": owner.digest,
    }
    if owner.adopted:
        attributes["adopted"] = "true"
    return ET.Element(f"{{{OWNER_NS}}}owner", attributes)


def _in_metadata(root: ET.Element, *tags: str) -> ET.Element | None:
    # One tag at a time: a find of a plain tag runs in C, a path goes through ElementPath
    # (several times slower, and every domain's XML is read at every reconcile).
    element: ET.Element | None = root.find("metadata")
    for tag in tags:
        if element is None:
            return None
        element = element.find(tag)
    return element


def read_owner(root: ET.Element) -> Owner | None:
    element = _in_metadata(root, f"{{{OWNER_NS}}}owner")
    if element is None:
        return None
    return Owner(
        kind=element.get("kind", ""),
        name=element.get("name", ""),
        uid=element.get("uid", ""),
        generation=int(element.get("generation", "0")),
        digest=element.get("digest", ""),
        adopted=element.get("adopted") == "true",
    )


def libosinfo_element(os_id: str) -> ET.Element:
    """The OS as virt-install records it."""
    element = ET.Element(f"{{{LIBOSINFO_NS}}}libosinfo")
    ET.SubElement(element, f"{{{LIBOSINFO_NS}}}os", {"id": os_id})
    return element


def read_os_id(root: ET.Element) -> str | None:
    """The libosinfo OS id of a domain definition, whoever wrote it."""
    element = _in_metadata(root, f"{{{LIBOSINFO_NS}}}libosinfo", f"{{{LIBOSINFO_NS}}}os")
    return element.get("id") if element is not None else None
