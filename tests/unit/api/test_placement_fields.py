"""The placement fields of the manifests: Domain ``spec.host`` and ``spec.hostSelector``,
and the ``spec.hostSelector`` of the host-level kinds, validated and read into the models."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from kvmrec.api.errors import ManifestError, ManifestProblem
from kvmrec.api.kinds import DomainSpec, NetworkSpec, OvsBridgeSpec, SnapshotPolicySpec
from kvmrec.api.manifests import parse_file

SOURCE = "fleet/web.yaml"
SPECS: dict[str, dict[str, Any]] = {
    "Domain": {"memory": "64Mi"},
    "Network": {"forward": "isolated"},
    "OvsBridge": {},
    "SnapshotPolicy": {"domains": ["web"], "every": "1h", "retention": {"keepLast": 2}},
}


def text(kind: str, **spec: Any) -> bytes:
    document = {
        "apiVersion": "kvmrec.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "web"},
        "spec": SPECS[kind] | spec,
    }
    return yaml.safe_dump(document).encode()


def problems(kind: str, **spec: Any) -> list[ManifestProblem]:
    with pytest.raises(ManifestError) as info:
        parse_file(SOURCE, text(kind, **spec))
    return info.value.problems


def test_a_pinned_domain_is_read_with_its_host() -> None:
    (manifest,) = parse_file(SOURCE, text("Domain", host="lab2.example"))
    spec = DomainSpec.from_spec(manifest.spec, "web")
    assert (spec.host, spec.host_selector) == ("lab2.example", {})


def test_a_domain_with_a_selector_is_read_with_its_labels() -> None:
    selector = {"matchLabels": {"zone": "b", "kvmrec.io/gpu": "yes"}}
    (manifest,) = parse_file(SOURCE, text("Domain", hostSelector=selector))
    spec = DomainSpec.from_spec(manifest.spec, "web")
    assert (spec.host, spec.host_selector) == (None, {"zone": "b", "kvmrec.io/gpu": "yes"})


def test_a_domain_without_placement_fields_has_none() -> None:
    (manifest,) = parse_file(SOURCE, text("Domain"))
    spec = DomainSpec.from_spec(manifest.spec, "web")
    assert (spec.host, spec.host_selector) == (None, {})
    assert "host" not in manifest.spec and "hostSelector" not in manifest.spec


def test_host_and_host_selector_together_is_an_error_naming_the_field() -> None:
    (problem,) = problems("Domain", host="lab1", hostSelector={"matchLabels": {"zone": "a"}})
    assert problem.field == "spec.hostSelector"
    assert "cannot be combined with spec.host" in problem.reason
    assert str(problem).startswith(f"{SOURCE}: ")
    assert problem.object == "Domain/web"


@pytest.mark.parametrize(
    ("host", "words"),
    [
        pytest.param("Lab1", "is not a host name", id="upper-case"),
        pytest.param("lab_1", "is not a host name", id="underscore"),
        pytest.param("-lab", "is not a host name", id="leading-dash"),
        pytest.param(7, "must be string", id="not-a-string"),
    ],
)
def test_a_bad_host_name_is_an_error_naming_spec_host(host: Any, words: str) -> None:
    (problem,) = problems("Domain", host=host)
    assert problem.field == "spec.host"
    assert words in problem.reason


@pytest.mark.parametrize("kind", list(SPECS))
def test_every_kind_with_a_host_selector_reads_it(kind: str) -> None:
    (manifest,) = parse_file(SOURCE, text(kind, hostSelector={"matchLabels": {"zone": "a"}}))
    model: Any = {
        "Domain": lambda s: DomainSpec.from_spec(s, "web"),
        "Network": NetworkSpec.from_spec,
        "OvsBridge": OvsBridgeSpec.from_spec,
        "SnapshotPolicy": SnapshotPolicySpec.from_spec,
    }[kind]
    assert model(manifest.spec).host_selector == {"zone": "a"}
    (plain,) = parse_file(SOURCE, text(kind))
    assert model(plain.spec).host_selector == {}


@pytest.mark.parametrize("kind", ["Network", "OvsBridge", "SnapshotPolicy"])
def test_only_a_domain_can_be_pinned(kind: str) -> None:
    (problem,) = problems(kind, host="lab1")
    assert problem.field == "spec.host"
    assert "unknown field host" in problem.reason


@pytest.mark.parametrize(
    ("selector", "field", "words"),
    [
        pytest.param(
            {"matchLabels": {"bad key": "a"}},
            "spec.hostSelector.matchLabels",
            "'bad key' is not a label key",
            id="bad-key",
        ),
        pytest.param(
            {"matchLabels": {"zone": "a b"}},
            "spec.hostSelector.matchLabels.zone",
            "'a b' is not a label value",
            id="bad-value",
        ),
        pytest.param(
            {"matchLabels": {"zone": 3}},
            "spec.hostSelector.matchLabels.zone",
            "must be string",
            id="value-not-a-string",
        ),
        pytest.param(
            {"matchExpressions": []},
            "spec.hostSelector.matchExpressions",
            "unknown field matchExpressions",
            id="unknown-field",
        ),
    ],
)
@pytest.mark.parametrize("kind", list(SPECS))
def test_a_bad_host_selector_names_its_field(
    kind: str, selector: dict[str, Any], field: str, words: str
) -> None:
    (problem,) = problems(kind, hostSelector=selector)
    assert problem.field == field
    assert words in problem.reason
