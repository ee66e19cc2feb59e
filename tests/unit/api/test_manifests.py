"""Manifest parsing: accepted files, located errors, quantities, and round-trip properties."""

from __future__ import annotations

import string

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from kvmrec.api import quantities
from kvmrec.api.errors import ManifestError, ManifestProblem
from kvmrec.api.kinds import Manifest, spec_digest
from kvmrec.api.manifests import parse_file

SOURCE = "team/web.yaml"
HEAD = "apiVersion: kvmrec.io/v1alpha1\nkind: Domain\nmetadata:\n  name: web\n"

DEFAULT_SPEC = {
    "type": "kvm",
    "vcpus": 1,
    "memory": "64Mi",
    "runStrategy": "Always",
    "autostart": False,
    "console": "serial",
    "disks": [],
    "deletionPolicy": "Delete",
    "restartPolicy": "Manual",
    "graphics": {"type": "none", "listen": "127.0.0.1"},
    "guestAgent": False,
    "syncClock": False,
    "os": {"firmware": "bios", "boot": ["hd"]},
    "interfaces": [],
}


def domain(name: str, body: str = "  memory: 64Mi\n") -> str:
    return f"apiVersion: kvmrec.io/v1alpha1\nkind: Domain\nmetadata:\n  name: {name}\nspec:\n{body}"


def problems_of(text: str | bytes) -> list[ManifestProblem]:
    data = text.encode() if isinstance(text, str) else text
    with pytest.raises(ManifestError) as info:
        parse_file(SOURCE, data)
    assert info.value.problems, "a ManifestError must say why"
    return info.value.problems


# -- accepted files -------------------------------------------------------------------------


def test_single_document_gets_schema_defaults() -> None:
    [manifest] = parse_file(SOURCE, domain("web").encode())
    assert manifest.kind == "Domain"
    assert manifest.name == "web"
    assert manifest.source == SOURCE
    assert manifest.document == 1
    assert dict(manifest.spec) == DEFAULT_SPEC
    assert manifest.labels == {}
    assert manifest.annotations == {}


def test_disk_defaults_are_filled_in_per_item() -> None:
    body = (
        "  memory: 2Gi\n  disks:\n  - path: /var/lib/a.qcow2\n  - path: /b.img\n    format: raw\n"
    )
    [manifest] = parse_file(SOURCE, domain("web", body).encode())
    assert manifest.spec["disks"] == [
        {
            "path": "/var/lib/a.qcow2",
            "format": "qcow2",
            "device": "disk",
            "readOnly": False,
            "deletionPolicy": "Keep",
        },
        {
            "path": "/b.img",
            "format": "raw",
            "device": "disk",
            "readOnly": False,
            "deletionPolicy": "Keep",
        },
    ]


def test_multi_document_file_keeps_labels_annotations_and_document_numbers() -> None:
    text = (
        "---\n"
        "apiVersion: kvmrec.io/v1alpha1\n"
        "kind: Domain\n"
        "metadata:\n"
        "  name: web-1\n"
        "  labels: {tier: web, backup: daily}\n"
        "  annotations:\n"
        '    kvmrec.io/adopt: "true"\n'
        "spec:\n"
        "  memory: 1Gi\n"
        "  vcpus: 4\n"
        "  runStrategy: Halted\n"
        "  autostart: true\n"
        "---\n" + domain("db-1", "  memory: 512Mi\n  deletionPolicy: Orphan\n")
    )
    web, db = parse_file(SOURCE, text.encode())
    assert (web.name, web.document, db.name, db.document) == ("web-1", 1, "db-1", 2)
    assert web.labels == {"tier": "web", "backup": "daily"}
    assert web.annotations == {"kvmrec.io/adopt": "true"}
    assert dict(web.spec) == DEFAULT_SPEC | {
        "memory": "1Gi",
        "vcpus": 4,
        "runStrategy": "Halted",
        "autostart": True,
    }
    assert db.spec["deletionPolicy"] == "Orphan"
    assert db.spec["memory"] == "512Mi"
    assert db.labels == {}


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty-file"),
        pytest.param("---\n", id="one-empty-document"),
        pytest.param("---\n---\n# only a comment\n---\n", id="several-empty-documents"),
        pytest.param("--- ~\n", id="explicit-null-document"),
    ],
)
def test_empty_documents_yield_nothing(text: str) -> None:
    assert parse_file(SOURCE, text.encode()) == []


def test_empty_documents_between_real_ones_are_skipped_but_counted() -> None:
    text = "---\n---\n" + domain("a") + "---\n---\n" + domain("b") + "---\n"
    manifests = parse_file(SOURCE, text.encode())
    assert [(m.name, m.document) for m in manifests] == [("a", 2), ("b", 4)]


def test_integer_memory_is_accepted() -> None:
    [manifest] = parse_file(SOURCE, domain("web", "  memory: 1048576\n").encode())
    assert manifest.spec["memory"] == 1048576


# -- errors, each located --------------------------------------------------------------------

# Lines of ``HEAD + "spec:\n" + body``: 1 apiVersion, 2 kind, 3 metadata, 4 name, 5 spec,
# 6 the first line of body.
ERROR_CASES = [
    pytest.param(
        HEAD + "spec:\n  memory: 64Mi\nreplicas: 2\n",
        "replicas",
        7,
        "unknown field replicas",
        id="unknown-field-top-level",
    ),
    pytest.param(
        HEAD + "spec:\n  memory: 64Mi\n  cpus: 2\n",
        "spec.cpus",
        7,
        "unknown field cpus",
        id="unknown-field-in-spec",
    ),
    pytest.param(
        HEAD + "spec:\n  memory: 64Mi\n  disks:\n  - path: /a.img\n    sise: 10Gi\n",
        "spec.disks[0].sise",
        9,
        "unknown field sise",
        id="unknown-field-in-disk",
    ),
    pytest.param(
        HEAD + "metadata2: {}\nspec:\n  memory: 64Mi\n",
        "metadata2",
        5,
        "unknown field metadata2",
        id="unknown-field-misspelt-metadata",
    ),
    pytest.param(
        HEAD + "spec:\n  memory: 64Mi\n  vcpus: two\n",
        "spec.vcpus",
        7,
        "must be integer",
        id="wrong-type-string-for-integer",
    ),
    pytest.param(
        HEAD + "spec:\n  memory: 64Mi\n  autostart: 'yes'\n",
        "spec.autostart",
        7,
        "must be boolean",
        id="wrong-type-string-for-boolean",
    ),
    pytest.param(
        HEAD + "spec:\n  memory: 64Mi\n  disks: /a.img\n",
        "spec.disks",
        7,
        "must be array",
        id="wrong-type-string-for-array",
    ),
    pytest.param(
        HEAD + "spec:\n  memory: 64Mi\n  vcpus: 0\n",
        "spec.vcpus",
        7,
        "minimum of 1",
        id="vcpus-below-minimum",
    ),
    pytest.param(
        HEAD + "spec:\n  memory: 64Mi\n  vcpus: 513\n",
        "spec.vcpus",
        7,
        "maximum of 512",
        id="vcpus-above-maximum",
    ),
    pytest.param(
        HEAD + "spec:\n  memory: 64Mi\n  runStrategy: Sometimes\n",
        "spec.runStrategy",
        7,
        "must be one of Always, RerunOnFailure, Once, Halted, Manual (got 'Sometimes')",
        id="bad-enum-runStrategy",
    ),
    pytest.param(
        HEAD + "spec:\n  memory: 64Mi\n  disks:\n  - path: /a.img\n    bus: usb\n",
        "spec.disks[0].bus",
        9,
        "must be one of virtio, sata, scsi, ide",
        id="bad-enum-disk-bus",
    ),
    pytest.param(
        HEAD + "spec:\n  memory: 64X\n",
        "spec.memory",
        6,
        "'64X' is not a quantity",
        id="bad-quantity",
    ),
    pytest.param(
        HEAD + "spec:\n  memory: 64mi\n",
        "spec.memory",
        6,
        "'64mi' is not a quantity",
        id="bad-quantity-lowercase-unit",
    ),
    pytest.param(
        HEAD + "spec:\n  memory: 512Ki\n",
        "spec.memory",
        6,
        "is below 1Mi",
        id="memory-below-1Mi",
    ),
    pytest.param(
        HEAD + "spec:\n  memory: 1048575\n",
        "spec.memory",
        6,
        "is below 1Mi",
        id="memory-one-byte-below-1Mi",
    ),
    pytest.param(
        HEAD.replace("name: web", "name: Web_1") + "spec:\n  memory: 64Mi\n",
        "metadata.name",
        4,
        "'Web_1' is not a valid name",
        id="bad-name-uppercase",
    ),
    pytest.param(
        HEAD.replace("name: web", "name: web-") + "spec:\n  memory: 64Mi\n",
        "metadata.name",
        4,
        "'web-' is not a valid name",
        id="bad-name-trailing-dash",
    ),
    pytest.param(
        HEAD.replace("name: web", "name: " + "a" * 64) + "spec:\n  memory: 64Mi\n",
        "metadata.name",
        4,
        "is not a valid name",
        id="bad-name-too-long",
    ),
    pytest.param(
        "apiVersion: kvmrec.io/v1alpha1\nkind: Domain\nmetadata:\n  labels: {a: b}\n"
        "spec:\n  memory: 64Mi\n",
        "metadata.name",
        3,
        "is required",
        id="missing-name",
    ),
    pytest.param(
        HEAD,
        "spec",
        1,
        "is required",
        id="missing-spec",
    ),
    pytest.param(
        HEAD + "spec:\n  vcpus: 2\n",
        "spec.memory",
        5,
        "is required",
        id="missing-memory",
    ),
    pytest.param(
        HEAD.replace("kvmrec.io/v1alpha1", "kvmrec.io/v1") + "spec:\n  memory: 64Mi\n",
        "apiVersion",
        1,
        "must be kvmrec.io/v1alpha1 (got 'kvmrec.io/v1')",
        id="wrong-apiVersion",
    ),
    pytest.param(
        "kind: Domain\nmetadata:\n  name: web\nspec:\n  memory: 64Mi\n",
        "apiVersion",
        1,
        "must be kvmrec.io/v1alpha1 (got None)",
        id="missing-apiVersion",
    ),
    pytest.param(
        "apiVersion: kvmrec.io/v1alpha1\nmetadata:\n  name: web\nspec:\n  memory: 64Mi\n",
        "kind",
        1,
        "unknown kind None",
        id="missing-kind",
    ),
    pytest.param(
        HEAD.replace("kind: Domain", "kind: VirtualMachine") + "spec:\n  memory: 64Mi\n",
        "kind",
        2,
        "unknown kind 'VirtualMachine' (known: Domain",
        id="unknown-kind",
    ),
    pytest.param(
        HEAD + "spec:\n  memory: 64Mi\n  disks:\n  - path: /a.img\n  - path: /a.img\n",
        "spec.disks[1].path",
        9,
        "'/a.img' is already used by spec.disks[0]",
        id="duplicate-disk-path",
    ),
    pytest.param(
        HEAD + "spec:\n  memory: 64Mi\n  disks:\n  - path: images/a.img\n",
        "spec.disks[0].path",
        8,
        "'images/a.img' is not an absolute path",
        id="relative-disk-path",
    ),
    pytest.param(
        HEAD + "spec:\n  memory: 64Mi\n  disks:\n  - path: /srv/../etc/shadow\n",
        "spec.disks[0].path",
        8,
        "must not contain '..'",
        id="dot-dot-disk-path",
    ),
    pytest.param(
        HEAD + "spec:\n  memory: 64Mi\n  os:\n    initrd: /boot/initrd.img\n",
        "spec.os.initrd",
        8,
        "needs os.kernel",
        id="initrd-without-kernel",
    ),
    pytest.param(
        HEAD + "spec:\n  memory: 64Mi\n  os:\n    kernel: boot/vmlinuz\n",
        "spec.os.kernel",
        8,
        "is not an absolute path",
        id="relative-kernel",
    ),
    pytest.param(
        HEAD + "spec:\n  memory: 64Mi\n  os:\n    firmware: efi\n    kernel: /k\n",
        "spec.os.kernel",
        9,
        "needs firmware bios",
        id="kernel-with-efi",
    ),
    pytest.param(
        HEAD + "spec:\n  memory: 64Mi\n  syncClock: true\n",
        "spec.syncClock",
        7,
        "needs guestAgent: true",
        id="sync-clock-without-agent",
    ),
    pytest.param(
        HEAD + "spec:\n  memory: 64Mi\n  terminationGracePeriodSeconds: -1\n",
        "spec.terminationGracePeriodSeconds",
        7,
        "minimum",
        id="negative-grace-period",
    ),
    pytest.param(
        HEAD + "spec:\n  memory: 64Mi\n  memory: 128Mi\n",
        "spec.memory",
        7,
        "duplicate key 'memory'",
        id="duplicate-yaml-key",
    ),
]


@pytest.mark.parametrize(("text", "field", "line", "reason"), ERROR_CASES)
def test_each_error_names_file_line_document_field_and_reason(
    text: str, field: str, line: int, reason: str
) -> None:
    [problem] = problems_of(text)
    assert problem.source == SOURCE
    assert problem.field == field
    assert problem.line == line
    assert problem.document == 1
    assert reason in problem.reason
    rendered = str(problem)
    assert rendered.startswith(f"{SOURCE}: line {line}: document 1: ")
    assert f"{field}: " in rendered
    assert problem.message() == rendered[len(SOURCE) + 2 :]


def test_errors_in_a_later_document_carry_that_document_and_its_own_line() -> None:
    text = domain("a") + "---\n" + domain("b", "  memory: 64Mi\n  vcpus: -1\n")
    [problem] = problems_of(text)
    assert (problem.document, problem.field, problem.line) == (2, "spec.vcpus", 14)
    assert problem.object == "Domain/b"
    assert str(problem).startswith(f"{SOURCE}: line 14: document 2: Domain/b: spec.vcpus: ")


def test_several_problems_in_one_document_are_all_reported() -> None:
    text = HEAD + "spec:\n  memory: 64Mi\n  vcpus: two\n  runStrategy: Never\n  colour: red\n"
    problems = problems_of(text)
    assert sorted(p.field or "" for p in problems) == [
        "spec.colour",
        "spec.runStrategy",
        "spec.vcpus",
    ]
    assert {p.line for p in problems} == {7, 8, 9}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param("- a\n- b\n", "must be a mapping, not list", id="list"),
        pytest.param("just a string\n", "must be a mapping, not str", id="scalar"),
        pytest.param("42\n", "must be a mapping, not int", id="number"),
    ],
)
def test_non_mapping_document(text: str, reason: str) -> None:
    [problem] = problems_of(domain("ok") + "---\n" + text)
    assert problem.document == 2
    assert problem.line == 8
    assert problem.field is None
    assert reason in problem.reason


@pytest.mark.parametrize(
    ("text", "line"),
    [
        # The line where the broken construct starts, not where PyYAML gave up on it.
        pytest.param(HEAD + "spec:\n  memory: 64Mi\n  vcpus: [1, 2\n", 7, id="unclosed-flow"),
        pytest.param(HEAD + "spec:\n  memory: 64Mi\n   vcpus: 2\n", 7, id="bad-indentation"),
        pytest.param(HEAD + "spec:\n\tmemory: 64Mi\n", 6, id="tab-indentation"),
        pytest.param(HEAD + 'spec:\n  memory: "64Mi\n', 6, id="unterminated-string"),
        pytest.param(HEAD + "spec:\n  memory: 64Mi\n  cpu\n  vcpus: 2\n", 7, id="no-colon"),
    ],
)
def test_invalid_yaml_names_its_line(text: str, line: int) -> None:
    [problem] = problems_of(text)
    assert problem.source == SOURCE
    assert problem.reason.startswith("invalid YAML: ")
    assert problem.line == line
    assert str(problem).startswith(f"{SOURCE}: line {line}: invalid YAML: ")


def test_an_unclosed_bracket_is_reported_where_it_opens_with_where_parsing_failed() -> None:
    body = "  type: kvm\n  memory: 64Mi\n  vcpus: [1, 2\n  autostart: true\n  console: serial\n"
    [problem] = problems_of(HEAD + "spec:\n" + body)
    assert problem.line == 8  # the line of the `[`
    assert problem.reason == (
        "invalid YAML: while parsing a flow sequence: expected ',' or ']', but got ':' on line 9"
    )


def test_duplicate_key_in_a_later_document_names_that_document() -> None:
    text = domain("a") + "---\n" + HEAD.replace("name: web", "name: b\n  name: c")
    [problem] = problems_of(text + "spec:\n  memory: 64Mi\n")
    assert (problem.document, problem.field, problem.line) == (2, "metadata.name", 12)
    assert "duplicate key 'name'" in problem.reason


def test_yaml_merge_keys_are_not_duplicates() -> None:
    text = (
        "apiVersion: kvmrec.io/v1alpha1\nkind: Domain\nmetadata:\n  name: web\n"
        "spec:\n  <<: {memory: 64Mi}\n  <<: {vcpus: 2}\n"
    )
    [manifest] = parse_file(SOURCE, text.encode())
    assert (manifest.spec["memory"], manifest.spec["vcpus"]) == ("64Mi", 2)


def test_same_object_twice_in_one_file() -> None:
    text = domain("web") + "---\n" + domain("web", "  memory: 128Mi\n")
    [problem] = problems_of(text)
    assert problem.document == 2
    assert problem.field == "metadata.name"
    assert problem.line == 11
    assert problem.reason == "Domain/web is already defined in document 1"


@pytest.mark.parametrize(
    ("data", "line"),
    [
        pytest.param(b"\xff\xfe" + HEAD.encode(), 1, id="bad-first-byte"),
        pytest.param(HEAD.encode() + b"spec:\n  memory: 64Mi\n  # caf\xe9\n", 7, id="latin-1"),
    ],
)
def test_non_utf8_bytes(data: bytes, line: int) -> None:
    [problem] = problems_of(data)
    assert problem.source == SOURCE
    assert problem.line == line
    assert "not UTF-8 text" in problem.reason


def test_one_bad_document_out_of_three_rejects_the_whole_file() -> None:
    text = (
        domain("a")
        + "---\n"
        + domain("b", "  memory: 64Mi\n  runStrategy: Sometimes\n")
        + "---\n"
        + domain("c")
    )
    with pytest.raises(ManifestError) as info:
        parse_file(SOURCE, text.encode())
    [problem] = info.value.problems
    assert (problem.document, problem.field, problem.object) == (2, "spec.runStrategy", "Domain/b")
    assert SOURCE in str(info.value)


def test_problems_from_several_documents_are_collected() -> None:
    text = domain("a", "  memory: 1X\n") + "---\n" + domain("b") + "---\n" + "- not a mapping\n"
    problems = problems_of(text)
    assert [(p.document, p.field) for p in problems] == [(1, "spec.memory"), (3, None)]


# -- quantities ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("0", 0, id="zero"),
        pytest.param("1", 1, id="one-byte"),
        pytest.param(4096, 4096, id="int"),
        pytest.param("1Ki", 1024, id="Ki"),
        pytest.param("64Mi", 64 * 1024**2, id="Mi"),
        pytest.param("2Gi", 2 * 1024**3, id="Gi"),
        pytest.param("1Ti", 1024**4, id="Ti"),
        pytest.param("1K", 1000, id="K"),
        pytest.param("1M", 10**6, id="M"),
        pytest.param("1G", 10**9, id="G"),
        pytest.param("3T", 3 * 10**12, id="T"),
        pytest.param("1.5Gi", 3 * 1024**3 // 2, id="fraction"),
        pytest.param("0.5Ki", 512, id="half-Ki"),
        pytest.param("1.1", 2, id="fractional-bytes-round-up"),
        pytest.param("0.0001Ki", 1, id="tiny-rounds-up"),
        pytest.param(" 64Mi ", 64 * 1024**2, id="surrounding-space"),
    ],
)
def test_parse_bytes(value: str | int, expected: int) -> None:
    assert quantities.parse_bytes(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("64X", id="unknown-unit"),
        pytest.param("64mi", id="lowercase"),
        pytest.param("Mi", id="no-number"),
        pytest.param("", id="empty"),
        pytest.param("-1Mi", id="negative-text"),
        pytest.param(-1, id="negative-int"),
        pytest.param("1e6", id="exponent"),
        pytest.param("64 Mi", id="inner-space"),
        pytest.param(".5Gi", id="leading-dot"),
        pytest.param(True, id="bool"),
    ],
)
def test_parse_bytes_rejects(value: str | int) -> None:
    with pytest.raises(ValueError, match=r"quantity|negative"):
        quantities.parse_bytes(value)


@pytest.mark.parametrize(
    ("nbytes", "kib"),
    [(0, 0), (1, 1), (1023, 1), (1024, 1), (1025, 2), (64 * 1024**2, 65536), (10**9, 976563)],
)
def test_to_kib_rounds_up(nbytes: int, kib: int) -> None:
    assert quantities.to_kib(nbytes) == kib


@pytest.mark.parametrize(
    ("nbytes", "text"),
    [
        (0, "0"),
        (1, "1"),
        (1000, "1000"),
        (1024, "1Ki"),
        (1536, "1536"),
        (3 * 512 * 1024, "1536Ki"),
        (64 * 1024**2, "64Mi"),
        (1024**3, "1Gi"),
        (3 * 1024**3 // 2, "1536Mi"),
        (2 * 1024**4, "2Ti"),
        (2048 * 1024**4, "2048Ti"),
    ],
)
def test_format_bytes(nbytes: int, text: str) -> None:
    assert quantities.format_bytes(nbytes) == text


@given(st.integers(min_value=0, max_value=2**50))
def test_format_bytes_parses_back(nbytes: int) -> None:
    assert quantities.parse_bytes(quantities.format_bytes(nbytes)) == nbytes


# -- properties ------------------------------------------------------------------------------

_ALNUM = string.ascii_lowercase + string.digits
names = st.one_of(
    st.text(_ALNUM, min_size=1, max_size=1),
    st.builds(
        lambda first, middle, last: first + middle + last,
        st.sampled_from(_ALNUM),
        st.text(_ALNUM + "-", max_size=61),
        st.sampled_from(_ALNUM),
    ),
)
specs = st.fixed_dictionaries(
    {
        "vcpus": st.integers(min_value=1, max_value=512),
        "memory": st.integers(min_value=1, max_value=1024 * 1024).map(lambda n: f"{n}Mi"),
        "runStrategy": st.sampled_from(["Always", "Halted", "Manual"]),
        "autostart": st.booleans(),
    },
    optional={
        "type": st.sampled_from(["kvm", "qemu"]),
        "console": st.sampled_from(["serial", "none"]),
        "deletionPolicy": st.sampled_from(["Delete", "Orphan"]),
    },
)
labels = st.dictionaries(st.text(_ALNUM + "-./", min_size=1, max_size=20), st.text(max_size=20))


@settings(max_examples=60, deadline=None)
@given(name=names, spec=specs, labels=labels)
def test_dumped_valid_domains_parse_back_to_the_same_fields(
    name: str, spec: dict[str, object], labels: dict[str, str]
) -> None:
    document = {
        "apiVersion": "kvmrec.io/v1alpha1",
        "kind": "Domain",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    }
    [manifest] = parse_file("gen.yaml", yaml.safe_dump(document).encode())
    assert isinstance(manifest, Manifest)
    assert manifest.name == name
    assert dict(manifest.labels) == labels
    for field, value in spec.items():
        assert manifest.spec[field] == value, field
    assert set(manifest.spec) == set(DEFAULT_SPEC)
    # The generation follows what the operator wrote, not defaults a newer kvmrec adds.
    assert manifest.digest == spec_digest(spec)


@given(spec=specs, data=st.data())
def test_spec_digest_is_stable_under_key_order(
    spec: dict[str, object], data: st.DataObject
) -> None:
    keys = data.draw(st.permutations(list(spec)))
    reordered = {k: spec[k] for k in keys}
    assert spec_digest(reordered) == spec_digest(spec)
    changed = dict(spec) | {"vcpus": int(spec["vcpus"]) % 512 + 1}  # type: ignore[call-overload]
    assert spec_digest(changed) != spec_digest(spec)


@settings(max_examples=30, deadline=None)
@given(spec=specs, data=st.data())
def test_parsed_digest_ignores_key_order_in_the_file(
    spec: dict[str, object], data: st.DataObject
) -> None:
    keys = data.draw(st.permutations(list(spec)))
    first = {
        "apiVersion": "kvmrec.io/v1alpha1",
        "kind": "Domain",
        "metadata": {"name": "x"},
        "spec": spec,
    }
    second = dict(first, spec={k: spec[k] for k in keys})
    [a] = parse_file("a.yaml", yaml.safe_dump(first, sort_keys=False).encode())
    [b] = parse_file("b.yaml", yaml.safe_dump(second, sort_keys=False).encode())
    assert a.digest == b.digest
