"""A Domain's CPU <-> libvirt's ``<cpu>`` element.

A definition says what was asked: ``<cpu mode='host-passthrough'/>``, or a custom model
with its features. libvirt fills in a definition without one as QEMU's default CPU
(``custom``, model ``qemu64``, no features) and that reads back as no CPU at all. A running
guest's live XML is another matter: libvirt expands the CPU the guest got into the full list
of its features (``check='full'``), and host-model becomes the custom model it stood for.
What the guest was started with is then read from kvmrec's own record of it, a small
element in ``<metadata>`` (its own XML namespace) written with every definition that has a
CPU and kept by libvirt in the live XML as it was at the start.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from kvmrec.api.domain_parts import Cpu, CpuFeature
from kvmrec.backends import xml_text

CPU_NS = "https://kvmrec.io/xmlns/cpu/v1alpha1"
CPU_PREFIX = "kvmrec-cpu"
QEMU_DEFAULT_MODEL = "qemu64"  # what QEMU gives an x86_64 guest that names no CPU

xml_text.register_namespace(CPU_PREFIX, CPU_NS)


def element(cpu: Cpu) -> ET.Element:
    """The ``<cpu>`` element of a definition."""
    attributes = {"mode": cpu.mode}
    if cpu.mode == "custom":
        attributes.update(match="exact", check="partial")
    root = ET.Element("cpu", attributes)
    if cpu.model is not None:
        # forbid: a model the host cannot run is refused, not silently swapped for another.
        ET.SubElement(root, "model", {"fallback": "forbid"}).text = cpu.model
    for feature in cpu.features:
        ET.SubElement(root, "feature", {"policy": feature.policy, "name": feature.name})
    return root


def stamp(cpu: Cpu) -> ET.Element:
    """kvmrec's record of the CPU asked for, for ``<metadata>``."""
    attributes = {"mode": cpu.mode}
    if cpu.model is not None:
        attributes["model"] = cpu.model
    root = ET.Element(f"{{{CPU_NS}}}cpu", attributes)
    for feature in cpu.features:
        ET.SubElement(
            root, f"{{{CPU_NS}}}feature", {"name": feature.name, "policy": feature.policy}
        )
    return root


def parse(domain: ET.Element) -> Cpu | None:
    """The CPU a definition (or a running guest's live XML) asks for; None: QEMU's default."""
    found = domain.find("cpu")
    if found is None:
        return None
    if found.get("check") == "full":  # expanded at the start of a running guest
        metadata = domain.find("metadata")
        recorded = metadata.find(f"{{{CPU_NS}}}cpu") if metadata is not None else None
        if recorded is None:
            return None  # started from a definition that named no CPU
        return _cpu(recorded, recorded.get("model"), f"{{{CPU_NS}}}feature")
    return _cpu(found, found.findtext("model"), "feature")


def _cpu(found: ET.Element, model: str | None, feature_tag: str) -> Cpu | None:
    mode = found.get("mode", "custom")
    features = tuple(
        sorted(
            (
                CpuFeature(f.get("name", ""), f.get("policy", "require"))
                for f in found.findall(feature_tag)
            ),
            key=lambda f: f.name,
        )
    )
    cpu = Cpu(mode, model.strip() if model else None, features)
    return None if is_default(cpu) else cpu


def is_default(cpu: Cpu | None) -> bool:
    """Whether ``cpu`` is QEMU's default CPU, the one a definition without ``<cpu>`` gets."""
    return cpu is None or (
        cpu.mode == "custom" and cpu.model == QEMU_DEFAULT_MODEL and not cpu.features
    )
