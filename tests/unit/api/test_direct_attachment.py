"""Interfaces attached directly: macvtap on a host NIC (``type: direct``) and an SR-IOV
virtual function by PCI address (``type: hostdev``). The typed model, the validation
(file, line, field, reason), the XML round trip and drift, and the dependency on the host
device being there.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest
import yaml

from kvmrec.api.domain_parts import Interface, derived_mac
from kvmrec.api.errors import ManifestError, ManifestProblem
from kvmrec.api.kinds import DomainSpec
from kvmrec.api.manifests import parse_file
from kvmrec.backends import domain_xml
from kvmrec.backends.libvirt.live import LiveDomain
from kvmrec.reconcilers.adoption import manifest_for
from kvmrec.reconcilers.dependencies import Dependencies, domain_refs
from kvmrec.reconcilers.domain_diff import diff_config, live_class

SOURCE = "team/web.yaml"
HEAD = "apiVersion: kvmrec.io/v1alpha1\nkind: Domain\nmetadata:\n  name: web\nspec:\n"

DIRECT_AND_HOSTDEV = (
    "  memory: 64Mi\n"
    "  interfaces:\n"
    "  - {name: lan, type: direct, source: {dev: eth0, mode: vepa}}\n"
    "  - {name: mv, type: direct, source: {dev: bond0}, model: e1000e}\n"
    "  - name: vf\n"
    "    type: hostdev\n"
    "    source: {address: '0000:03:10.2'}\n"
    "    vlan: 42\n"
    "    mac: '52:54:00:aa:bb:cc'\n"
)


def spec_of(body: str) -> DomainSpec:
    [manifest] = parse_file(SOURCE, (HEAD + body).encode())
    return DomainSpec.from_spec(manifest.spec, "web")


def problems_of(body: str) -> list[ManifestProblem]:
    with pytest.raises(ManifestError) as info:
        parse_file(SOURCE, (HEAD + body).encode())
    return info.value.problems


def test_direct_and_hostdev_interfaces_as_typed_model() -> None:
    spec = spec_of(DIRECT_AND_HOSTDEV)
    assert spec.interfaces == (
        Interface(name="lan", mac=derived_mac("web", "lan"), dev="eth0", mode="vepa"),
        Interface(
            name="mv", mac=derived_mac("web", "mv"), dev="bond0", mode="bridge", model="e1000e"
        ),
        Interface(name="vf", mac="52:54:00:aa:bb:cc", address="0000:03:10.2", vlan=42, model=""),
    )
    assert [i.type for i in spec.interfaces] == ["direct", "direct", "hostdev"]


def test_an_upper_case_pci_address_is_the_same_device() -> None:
    body = (
        "  memory: 64Mi\n  interfaces:\n"
        "  - {name: vf, type: hostdev, source: {address: 0000:0A:1F.7}}\n"
    )
    assert spec_of(body).interfaces[0].address == "0000:0a:1f.7"


def test_xml_of_direct_and_hostdev_and_back() -> None:
    spec = spec_of(DIRECT_AND_HOSTDEV)
    xml = domain_xml.build("web", spec, None)
    devices = ET.fromstring(xml).find("devices")
    assert devices is not None
    direct, other, vf = devices.findall("interface")
    assert direct.get("type") == "direct"
    assert direct.find("source").attrib == {"dev": "eth0", "mode": "vepa"}  # type: ignore[union-attr]
    assert other.find("model").get("type") == "e1000e"  # type: ignore[union-attr]
    assert (vf.get("type"), vf.get("managed")) == ("hostdev", "yes")
    assert vf.find("source/address").attrib == {  # type: ignore[union-attr]
        "type": "pci",
        "domain": "0x0000",
        "bus": "0x03",
        "slot": "0x10",
        "function": "0x2",
    }
    assert vf.find("vlan/tag").get("id") == "42"  # type: ignore[union-attr]
    assert vf.find("model") is None
    config = domain_xml.parse(xml)
    assert config.interfaces == tuple(replace(i, name="") for i in spec.interfaces)
    assert diff_config(spec, config) == []
    assert domain_xml.unmodelled(xml) == []


def test_what_libvirt_adds_to_a_running_macvtap_and_vf_is_not_drift() -> None:
    spec = spec_of(DIRECT_AND_HOSTDEV)
    xml = domain_xml.build("web", spec, None)
    live = xml.replace(
        '<source dev="eth0" mode="vepa" />',
        '<source dev="eth0" mode="vepa"/><target dev="macvtap3"/><alias name="net0"/>'
        '<address type="pci" domain="0x0000" bus="0x00" slot="0x03" function="0x0"/>',
    ).replace(
        'function="0x2" /></source>',
        'function="0x2" /></source><driver name="vfio"/><alias name="hostdev0"/>',
    )
    assert live != xml
    assert diff_config(spec, domain_xml.parse(live)) == []


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        pytest.param(('mode="vepa"', 'mode="private"'), "mode", id="mode"),
        pytest.param(('dev="eth0"', 'dev="eth1"'), "dev", id="dev"),
        pytest.param(('<model type="e1000e" />', '<model type="virtio" />'), "model", id="model"),
        pytest.param(('slot="0x10"', 'slot="0x11"'), "address", id="vf-address"),
        pytest.param(('<tag id="42" />', '<tag id="43" />'), "vlan", id="vlan"),
    ],
)
def test_a_changed_mode_dev_model_address_or_vlan_is_drift_taken_live(
    edit: tuple[str, str], field: str
) -> None:
    spec = spec_of(DIRECT_AND_HOSTDEV)
    xml = domain_xml.build("web", spec, None)
    assert edit[0] in xml
    config = domain_xml.parse(xml.replace(*edit))
    [drift] = diff_config(spec, config)
    assert drift.field == "spec.interfaces"
    changed = [
        (want, have)
        for want, have in zip(drift.desired, drift.actual, strict=True)
        if {k: v for k, v in want.items() if k != "name"} != have
    ]
    assert len(changed) == 1
    want, have = changed[0]
    flat = {**want, **want.get("source", {})}
    flat_have = {**have, **have.get("source", {})}
    assert flat[field] != flat_have[field]
    live, restart = live_class(spec, config)
    assert [d.field for d in live] == ["spec.interfaces"] and restart == []


# (body under spec:, field, reason)
RULES = [
    pytest.param(
        "  - {name: a, type: direct}\n",
        "spec.interfaces[0]",
        "needs either network or bridge, or source",
        id="direct-without-source",
    ),
    pytest.param(
        "  - {name: a, type: direct, source: {mode: bridge}}\n",
        "spec.interfaces[0].source",
        "needs dev (the host NIC) for type direct",
        id="direct-without-dev",
    ),
    pytest.param(
        "  - {name: a, source: {dev: eth0}}\n",
        "spec.interfaces[0].type",
        "must be direct or hostdev with source",
        id="source-without-type",
    ),
    pytest.param(
        "  - {name: a, type: direct, network: default}\n",
        "spec.interfaces[0].type",
        "direct does not go with network",
        id="direct-with-network",
    ),
    pytest.param(
        "  - {name: a, type: direct, source: {dev: eth0, mode: vepa}, vlan: 7}\n",
        "spec.interfaces[0].vlan",
        "goes with type hostdev",
        id="vlan-on-direct",
    ),
    pytest.param(
        "  - {name: a, type: direct, source: {dev: eth0, mode: bridged}}\n",
        "spec.interfaces[0].source.mode",
        "bridged",
        id="unknown-mode",
    ),
    pytest.param(
        "  - {name: a, type: direct, source: {dev: 'eth0/x'}}\n",
        "spec.interfaces[0].source.dev",
        "is not a network device name",
        id="dev-with-slash",
    ),
    pytest.param(
        "  - {name: a, type: direct, source: {dev: eth0, address: '0000:03:10.2'}}\n",
        "spec.interfaces[0].source.address",
        "goes with type hostdev, not direct",
        id="address-on-direct",
    ),
    pytest.param(
        "  - {name: a, type: hostdev, source: {address: '03:10.2'}}\n",
        "spec.interfaces[0].source.address",
        "is not a PCI address (domain:bus:slot.function",
        id="short-pci-address",
    ),
    pytest.param(
        "  - {name: a, type: hostdev, source: {address: '0000:03:20.1'}}\n",
        "spec.interfaces[0].source.address",
        "slot 0x20 is above 0x1f",
        id="pci-slot-too-high",
    ),
    pytest.param(
        "  - {name: a, type: hostdev, source: {}}\n",
        "spec.interfaces[0].source",
        "needs address",
        id="hostdev-without-address",
    ),
    pytest.param(
        "  - {name: a, type: hostdev, source: {address: '0000:03:10.2'}, model: e1000}\n",
        "spec.interfaces[0].model",
        "a hostdev interface has no model",
        id="hostdev-with-model",
    ),
    pytest.param(
        "  - {name: a, type: hostdev, source: {address: '0000:03:10.2'}, vlan: 4095}\n",
        "spec.interfaces[0].vlan",
        "4094",
        id="vlan-too-high",
    ),
    pytest.param(
        "  - {name: a, type: hostdev, source: {address: '0000:03:10.2'}}\n"
        "  - {name: b, type: hostdev, source: {address: '0000:03:10.2'}}\n",
        "spec.interfaces[1].source.address",
        "0000:03:10.2 is already used by spec.interfaces[0]",
        id="one-vf-twice",
    ),
    pytest.param(
        "  - {name: a, type: direct, source: {dev: eth0}, virtualport: openvswitch}\n",
        "spec.interfaces[0].virtualport",
        "a direct interface has no bridge port",
        id="virtualport-on-direct",
    ),
]


@pytest.mark.parametrize(("items", "field", "reason"), RULES)
def test_each_rule_names_file_line_field_and_reason(items: str, field: str, reason: str) -> None:
    body = "  memory: 64Mi\n  interfaces:\n" + items
    problems = problems_of(body)
    assert [p.field for p in problems] == [field], problems
    [problem] = problems
    assert reason in problem.reason
    assert problem.source == SOURCE and problem.line is not None
    assert str(problem).startswith(f"{SOURCE}: line {problem.line}: document 1: Domain/web: ")


def test_the_host_nic_and_the_vf_are_dependencies_checked_on_the_host() -> None:
    spec = spec_of(DIRECT_AND_HOSTDEV)
    refs = domain_refs(spec)
    assert [(r.kind, r.name) for r in refs] == [
        ("HostNic", "eth0"),
        ("HostNic", "bond0"),
        ("PciDevice", "0000:03:10.2"),
    ]
    assert not any(r.manageable for r in refs)

    class NoStore:
        def get(self, key: object) -> None:
            raise AssertionError("a host device is never looked up as an object")

    deps = Dependencies(
        NoStore(),  # type: ignore[arg-type]
        lambda _name: True,
        lambda name: name == "eth0",
        lambda address: False,
    )
    assert deps.unmet(refs) == [
        "host NIC bond0 does not exist",
        "PCI device 0000:03:10.2 does not exist on this host",
    ]


def test_import_writes_direct_and_hostdev_interfaces_that_validate() -> None:
    spec = spec_of(DIRECT_AND_HOSTDEV)
    xml = domain_xml.build("web", spec, None)
    live = LiveDomain(domain_xml.parse(xml), "shutoff", "unknown", False, (xml, False, False))
    manifest = manifest_for(live)
    items = manifest["spec"]["interfaces"]
    assert items[0] == {
        "name": "net0",
        "mac": derived_mac("web", "lan"),
        "type": "direct",
        "source": {"dev": "eth0", "mode": "vepa"},
        "model": "virtio",
    }
    assert items[2] == {
        "name": "net2",
        "mac": "52:54:00:aa:bb:cc",
        "type": "hostdev",
        "source": {"address": "0000:03:10.2"},
        "vlan": 42,
    }
    # As a manifest, it is the same domain.
    [again] = parse_file("web.yaml", yaml.safe_dump(manifest).encode())
    assert DomainSpec.from_spec(again.spec, "web").interfaces == tuple(
        replace(i, name=f"net{n}") for n, i in enumerate(spec.interfaces)
    )
