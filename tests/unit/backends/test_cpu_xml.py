"""spec.cpu <-> libvirt's <cpu>: what is written, what reads back, and what counts as drift."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kvmrec.api.domain_parts import Cpu, CpuFeature
from kvmrec.api.errors import ManifestError
from kvmrec.api.kinds import DomainSpec
from kvmrec.api.manifests import parse_file
from kvmrec.backends import domain_xml
from kvmrec.backends.libvirt.live import LiveDomain
from kvmrec.reconcilers.adoption import manifest_for
from kvmrec.reconcilers.domain_diff import diff_config, live_class

BASE: dict[str, Any] = {"memory": "64Mi"}


def spec(**fields: Any) -> DomainSpec:
    return DomainSpec.from_spec(BASE | fields, "cpu-test")


@pytest.mark.parametrize(
    "cpu",
    [
        {"mode": "host-passthrough"},
        {"mode": "host-model"},
        {"mode": "custom", "model": "kvm64"},
        {
            "mode": "custom",
            "model": "Skylake-Server",
            "features": [
                {"name": "vmx", "policy": "require"},
                {"name": "avx", "policy": "disable"},
            ],
        },
        {"mode": "host-passthrough", "features": [{"name": "pcid", "policy": "optional"}]},
    ],
    ids=["passthrough", "host-model", "custom", "custom-features", "passthrough-features"],
)
def test_every_mode_round_trips_and_is_no_drift(cpu: dict[str, Any]) -> None:
    wanted = spec(cpu=cpu)
    config = domain_xml.parse(domain_xml.build("cpu-test", wanted, None))
    assert config.cpu == wanted.cpu
    assert diff_config(wanted, config) == []


def test_features_are_sorted_by_name_with_require_as_the_default_policy() -> None:
    cpu = Cpu.from_spec(
        {"mode": "custom", "model": "kvm64", "features": [{"name": "x"}, {"name": "a"}]}
    )
    assert cpu.features == (CpuFeature("a", "require"), CpuFeature("x", "require"))


def test_the_default_writes_no_cpu_element() -> None:
    xml = domain_xml.build("cpu-test", spec(), None)
    assert "<cpu" not in xml
    assert domain_xml.parse(xml).cpu is None


# What libvirt 9.0 makes of a definition that names no CPU, and of the running guest.
LIBVIRT_DEFAULT = """<domain type='kvm'><name>d</name><memory unit='KiB'>65536</memory>
<os><type arch='x86_64'>hvm</type></os>
<cpu mode='custom' match='exact' check='none'><model fallback='forbid'>qemu64</model></cpu>
</domain>"""
LIVE_DEFAULT = """<domain type='kvm'><name>d</name><memory unit='KiB'>65536</memory>
<os><type arch='x86_64'>hvm</type></os>
<cpu mode='custom' match='exact' check='full'><model fallback='forbid'>qemu64</model>
<feature policy='disable' name='pni'/><feature policy='require' name='x2apic'/></cpu>
</domain>"""


def cpu_fields(wanted: DomainSpec, xml: str) -> list[str]:
    return [d.field for d in diff_config(wanted, domain_xml.parse(xml))]


def test_libvirts_filled_in_default_reads_as_no_cpu() -> None:
    assert domain_xml.parse(LIBVIRT_DEFAULT).cpu is None
    assert domain_xml.parse(LIVE_DEFAULT).cpu is None
    assert "spec.cpu" not in cpu_fields(spec(), LIBVIRT_DEFAULT)


def test_a_running_guests_expanded_cpu_reads_as_what_it_was_started_with() -> None:
    wanted = spec(cpu={"mode": "host-model"})
    built = domain_xml.build("cpu-test", wanted, None)
    # libvirt turns host-model into the custom model it stands for, every feature listed.
    live = built.replace(
        '<cpu mode="host-model" />',
        "<cpu mode='custom' match='exact' check='full'><model fallback='forbid'>EPYC</model>"
        "<vendor>AMD</vendor><feature policy='require' name='acpi'/></cpu>",
    )
    assert live != built
    assert domain_xml.parse(live).cpu == wanted.cpu
    assert live_class(wanted, domain_xml.parse(live)) == ([], [])


def test_a_cpu_edited_by_hand_is_drift_that_needs_a_restart() -> None:
    running = domain_xml.parse(domain_xml.build("cpu-test", spec(), None))
    wanted = spec(cpu={"mode": "custom", "model": "kvm64"})
    drift = diff_config(wanted, running)
    assert [(d.field, d.desired, d.actual) for d in drift] == [
        ("spec.cpu", {"mode": "custom", "model": "kvm64"}, None)
    ]
    hot, restart = live_class(wanted, running)
    assert hot == [] and [d.field for d in restart] == ["spec.cpu"]


def test_custom_qemu64_without_features_is_the_default_cpu() -> None:
    wanted = spec(cpu={"mode": "custom", "model": "qemu64"})
    assert "spec.cpu" not in cpu_fields(wanted, LIBVIRT_DEFAULT)


@pytest.mark.parametrize(
    ("cpu", "extra", "field", "reason"),
    [
        ({"mode": "custom"}, {}, "spec.cpu.model", "mode custom needs a model"),
        ({"mode": "host-model", "model": "kvm64"}, {}, "spec.cpu.model", "goes with mode custom"),
        ({"mode": "host-passthrough"}, {"type": "qemu"}, "spec.cpu.mode", "needs type kvm"),
        (
            {"mode": "custom", "model": "kvm64", "features": [{"name": "vmx"}, {"name": "vmx"}]},
            {},
            "spec.cpu.features[1].name",
            "'vmx' is already named by spec.cpu.features[0]",
        ),
        ({"mode": "fast"}, {}, "spec.cpu.mode", "fast"),
        ({"mode": "custom", "model": "a b"}, {}, "spec.cpu.model", "is not a CPU model name"),
        (
            {"mode": "custom", "model": "kvm64", "features": [{"name": "vmx", "policy": "want"}]},
            {},
            "spec.cpu.features[0].policy",
            "want",
        ),
    ],
    ids=["no-model", "model-not-custom", "passthrough-tcg", "duplicate", "mode", "model", "policy"],
)
def test_bad_cpus_are_refused_naming_the_field(
    cpu: dict[str, Any], extra: dict[str, Any], field: str, reason: str
) -> None:
    body = {"apiVersion": "kvmrec.io/v1alpha1", "kind": "Domain", "metadata": {"name": "c"}}
    text = json.dumps(body | {"spec": BASE | extra | {"cpu": cpu}})  # JSON is YAML
    with pytest.raises(ManifestError) as caught:
        parse_file("c.yaml", text.encode())
    message = str(caught.value)
    assert "c.yaml" in message and field in message and reason in message


def test_import_describes_the_cpu() -> None:
    cpu = {"mode": "custom", "model": "kvm64", "features": [{"name": "pcid", "policy": "disable"}]}
    xml = domain_xml.build("cpu-test", spec(cpu=cpu), None)
    live = LiveDomain(domain_xml.parse(xml), "shutoff", "unknown", False, (xml, False, False))
    assert manifest_for(live)["spec"]["cpu"] == cpu
    plain = domain_xml.build("cpu-test", spec(), None)
    live = LiveDomain(domain_xml.parse(plain), "shutoff", "unknown", False, (plain, False, False))
    assert "cpu" not in manifest_for(live)["spec"]
