"""The full Domain spec: the semantic rules a schema cannot say, and the typed model.

Every rule of ``rules._domain_problems`` is shown rejecting a manifest with a problem
that names the file, the line, the document, the object, the field and the reason. The
expected line is marked in each case's YAML with ``# <`` so the numbers cannot go stale.
"""

from __future__ import annotations

import re

import pytest

from kvmrec.api.domain_parts import CloneSource, Disk, Graphics, Interface, derived_mac
from kvmrec.api.errors import ManifestError, ManifestProblem
from kvmrec.api.kinds import DeletionPolicy, DomainSpec, RestartPolicy, RunStrategy
from kvmrec.api.manifests import parse_file

SOURCE = "team/web.yaml"
HEAD = "apiVersion: kvmrec.io/v1alpha1\nkind: Domain\nmetadata:\n  name: web\nspec:\n"
MAC_PATTERN = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")  # the CRD's pattern for mac
MiB = 1024**2


def problems_of(body: str) -> list[ManifestProblem]:
    with pytest.raises(ManifestError) as info:
        parse_file(SOURCE, (HEAD + body).encode())
    assert info.value.problems, "a ManifestError must say why"
    return info.value.problems


def marked_line(body: str) -> int:
    """The 1-based line of the whole file that carries the ``# <`` marker."""
    [index] = [i for i, line in enumerate(body.splitlines()) if line.endswith("# <")]
    return HEAD.count("\n") + index + 1


# (body under spec:, field, reason); the problem's line is the one marked "# <".
RULES = [
    pytest.param(
        "  memory: 64Mi\n  disks:\n  - path: /vm/a.qcow2  # <\n    pool: default\n    volume: a\n",
        "spec.disks[0]",
        "needs either path, or pool and volume",
        id="disk-path-and-volume",
    ),
    pytest.param(
        "  memory: 64Mi\n  disks:\n  - size: 1Gi  # <\n",
        "spec.disks[0]",
        "needs either path, or pool and volume",
        id="disk-neither-path-nor-volume",
    ),
    pytest.param(
        "  memory: 64Mi\n  disks:\n  - pool: default  # <\n    size: 1Gi\n",
        "spec.disks[0]",
        "pool and volume go together",
        id="disk-pool-without-volume",
    ),
    pytest.param(
        "  memory: 64Mi\n  disks:\n  - volume: a  # <\n    size: 1Gi\n",
        "spec.disks[0]",
        "pool and volume go together",
        id="disk-volume-without-pool",
    ),
    pytest.param(
        "  memory: 64Mi\n  disks:\n  - path: /vm/a.qcow2\n  - path: /vm/a.qcow2  # <\n",
        "spec.disks[1].path",
        "'/vm/a.qcow2' is already used by spec.disks[0]",
        id="disk-path-twice",
    ),
    pytest.param(
        "  memory: 64Mi\n  disks:\n  - {pool: p, volume: v}\n  - pool: p\n    volume: v  # <\n",
        "spec.disks[1].volume",
        "'p/v' is already used by spec.disks[0]",
        id="disk-volume-twice",
    ),
    pytest.param(
        "  memory: 64Mi\n  disks:\n  - path: /vm/../etc/shadow  # <\n",
        "spec.disks[0].path",
        "must not contain '..'",
        id="dot-dot-in-path",
    ),
    pytest.param(
        "  memory: 64Mi\n  disks:\n  - path: /vm/a.qcow2\n    backingImage: /base/../x  # <\n",
        "spec.disks[0].backingImage",
        "must not contain '..'",
        id="dot-dot-in-backing-image",
    ),
    pytest.param(
        "  memory: 64Mi\n  disks:\n  - path: /vm/a.qcow2\n    cloneFrom:\n"
        "      path: /golden/../x  # <\n",
        "spec.disks[0].cloneFrom.path",
        "must not contain '..'",
        id="dot-dot-in-clone-path",
    ),
    pytest.param(
        "  memory: 64Mi\n  disks:\n  - path: /vm/a.qcow2\n    cloneFrom:  # <\n"
        "      path: /golden.qcow2\n      domain: db\n",
        "spec.disks[0].cloneFrom",
        "needs either path or domain",
        id="clone-path-and-domain",
    ),
    pytest.param(
        "  memory: 64Mi\n  disks:\n  - path: /vm/a.qcow2\n    cloneFrom: {disk: 1}  # <\n",
        "spec.disks[0].cloneFrom",
        "needs either path or domain",
        id="clone-neither-path-nor-domain",
    ),
    pytest.param(
        "  memory: 64Mi\n  disks:\n  - path: /vm/a.qcow2\n    backingImage: /base.qcow2\n"
        "    cloneFrom: {path: /golden.qcow2}  # <\n",
        "spec.disks[0].cloneFrom",
        "cannot be combined with backingImage",
        id="clone-and-backing-image",
    ),
    pytest.param(
        "  memory: 64Mi\n  disks:\n  - path: /vm/a.img\n    format: raw\n"
        "    backingImage: /base.qcow2  # <\n",
        "spec.disks[0].backingImage",
        "needs format qcow2",
        id="backing-image-with-raw",
    ),
    pytest.param(
        "  memory: 64Mi\n  disks:\n  - path: /iso/d.iso\n    device: cdrom\n    size: 1Gi  # <\n",
        "spec.disks[0].size",
        "is not allowed for a cdrom",
        id="cdrom-with-size",
    ),
    pytest.param(
        "  memory: 64Mi\n  disks:\n  - path: /iso/d.iso\n    device: cdrom\n"
        "    backingImage: /base.qcow2  # <\n",
        "spec.disks[0].backingImage",
        "is not allowed for a cdrom",
        id="cdrom-with-backing-image",
    ),
    pytest.param(
        "  memory: 64Mi\n  disks:\n  - path: /iso/d.iso\n    device: cdrom\n"
        "    cloneFrom: {path: /iso/golden.iso}  # <\n",
        "spec.disks[0].cloneFrom",
        "is not allowed for a cdrom",
        id="cdrom-with-clone",
    ),
    pytest.param(
        "  memory: 64Mi\n  disks:\n  - path: /iso/d.iso\n    device: cdrom\n    bus: virtio  # <\n",
        "spec.disks[0].bus",
        "a cdrom cannot be on virtio",
        id="cdrom-on-virtio",
    ),
    pytest.param(
        "  memory: 64Mi\n  disks:\n  - path: /vm/a.qcow2\n    size: 512Ki  # <\n",
        "spec.disks[0].size",
        "'512Ki' is below 1Mi",
        id="disk-size-below-1Mi",
    ),
    pytest.param(
        "  memory: 1Gi\n  maxMemory: 512Mi  # <\n",
        "spec.maxMemory",
        "must be at least memory (1Gi)",
        id="max-memory-below-memory",
    ),
    pytest.param(
        "  memory: 64Mi\n  vcpus: 4\n  maxVcpus: 2  # <\n",
        "spec.maxVcpus",
        "must be at least vcpus (4)",
        id="max-vcpus-below-vcpus",
    ),
    pytest.param(
        "  memory: 64Mi\n  interfaces:\n  - name: eth0  # <\n"
        "    network: default\n    bridge: br0\n",
        "spec.interfaces[0]",
        "needs either network or bridge",
        id="interface-network-and-bridge",
    ),
    pytest.param(
        "  memory: 64Mi\n  interfaces:\n  - name: eth0  # <\n    model: e1000\n",
        "spec.interfaces[0]",
        "needs either network or bridge",
        id="interface-neither-network-nor-bridge",
    ),
    pytest.param(
        "  memory: 64Mi\n  interfaces:\n  - name: eth0\n    network: default\n"
        "    virtualport: openvswitch  # <\n",
        "spec.interfaces[0].virtualport",
        "goes with bridge",
        id="virtualport-with-network",
    ),
    pytest.param(
        "  memory: 64Mi\n  interfaces:\n  - {name: eth0, network: default}\n"
        "  - name: eth0  # <\n    bridge: br0\n",
        "spec.interfaces[1].name",
        "'eth0' is already used by spec.interfaces[0]",
        id="interface-name-twice",
    ),
    pytest.param(
        "  memory: 64Mi\n  interfaces:\n  - {name: a, network: default, mac: '52:54:00:00:00:01'}\n"
        "  - name: b\n    bridge: br0\n    mac: '52:54:00:00:00:01'  # <\n",
        "spec.interfaces[1].mac",
        "52:54:00:00:00:01 is already used by spec.interfaces[0]",
        id="interface-mac-twice",
    ),
]


@pytest.mark.parametrize(("body", "field", "reason"), RULES)
def test_each_domain_rule_names_file_line_field_and_reason(
    body: str, field: str, reason: str
) -> None:
    [problem] = problems_of(body)
    line = marked_line(body)
    assert (problem.source, problem.document, problem.object) == (SOURCE, 1, "Domain/web")
    assert (problem.field, problem.line) == (field, line)
    assert reason in problem.reason
    assert str(problem).startswith(f"{SOURCE}: line {line}: document 1: Domain/web: {field}: ")


def test_a_cdrom_from_a_pool_gets_one_problem_per_field() -> None:
    body = "  memory: 64Mi\n  disks:\n  - device: cdrom\n    pool: isos\n    volume: d.iso\n"
    problems = problems_of(body)
    assert sorted((p.field, p.line, p.reason) for p in problems) == [
        ("spec.disks[0].pool", 9, "is not allowed for a cdrom"),
        ("spec.disks[0].volume", 10, "is not allowed for a cdrom"),
    ]


def test_every_broken_rule_of_one_document_is_reported() -> None:
    body = (
        "  memory: 1Gi\n  maxMemory: 1Mi\n  vcpus: 2\n  maxVcpus: 1\n  disks:\n"
        "  - {path: /a, device: cdrom, bus: virtio}\n"
        "  interfaces:\n  - {name: a, network: n, virtualport: openvswitch}\n"
    )
    assert sorted(p.field or "" for p in problems_of(body)) == [
        "spec.disks[0].bus",
        "spec.interfaces[0].virtualport",
        "spec.maxMemory",
        "spec.maxVcpus",
    ]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            "  memory: 1Gi\n  maxMemory: 1Gi\n  vcpus: 4\n  maxVcpus: 4\n", id="max-equal"
        ),
        pytest.param(
            "  memory: 64Mi\n  disks:\n  - {path: /iso/a.iso, device: cdrom, bus: ide}\n"
            "  - {path: /iso/b.iso, device: cdrom, bus: scsi}\n"
            "  - {path: /iso/c.iso, device: cdrom}\n",
            id="cdrom-on-ide-scsi-and-default",
        ),
        pytest.param(
            "  memory: 64Mi\n  disks:\n  - {path: /vm/a.qcow2, cloneFrom: {domain: db, disk: 2}}\n"
            "  - {path: /vm/b.qcow2, backingImage: /base.qcow2, size: 1Mi}\n",
            id="clone-from-a-domain-and-an-overlay",
        ),
        pytest.param(
            "  memory: 64Mi\n  disks:\n  - {path: /vm/a.qcow2}\n  - {pool: p, volume: a.qcow2}\n",
            id="same-name-as-path-and-as-volume",
        ),
        pytest.param(
            "  memory: 64Mi\n  interfaces:\n  - {name: a, bridge: br0, virtualport: openvswitch}\n"
            "  - {name: b, bridge: br0}\n",
            id="two-interfaces-on-one-bridge",
        ),
    ],
)
def test_boundaries_of_the_rules_are_accepted(body: str) -> None:
    [manifest] = parse_file(SOURCE, (HEAD + body).encode())
    assert manifest.name == "web"


# -- the typed model ---------------------------------------------------------------------------

FULL = """\
  type: qemu
  vcpus: 2
  maxVcpus: 8
  memory: 1Gi
  maxMemory: 4Gi
  runStrategy: RerunOnFailure
  restartPolicy: Auto
  autostart: true
  console: none
  graphics: {type: vnc, listen: "::1"}
  guestAgent: true
  os: {boot: [cdrom, hd]}
  disks:
  - {path: /vm/web.qcow2, size: 20Gi, backingImage: /golden/debian.qcow2, deletionPolicy: Delete}
  - {pool: fast, volume: web-data, size: 1Gi, bus: scsi, format: raw}
  - {path: /vm/web-copy.qcow2, cloneFrom: {domain: db, disk: 1}, readOnly: true}
  - {path: /iso/debian.iso, device: cdrom}
  interfaces:
  - {name: eth0, network: default}
  - {name: eth1, bridge: ovs0, virtualport: openvswitch, model: e1000e, mac: "02:00:00:00:00:01"}
  deletionPolicy: Orphan
"""


def test_a_full_manifest_becomes_the_full_model() -> None:
    [manifest] = parse_file(SOURCE, (HEAD + FULL).encode())
    assert DomainSpec.from_spec(manifest.spec, "web") == DomainSpec(
        memory=1024 * MiB,
        type="qemu",
        vcpus=2,
        max_vcpus=8,
        max_memory=4096 * MiB,
        run_strategy=RunStrategy.RERUN_ON_FAILURE,
        restart_policy=RestartPolicy.AUTO,
        autostart=True,
        console="none",
        graphics=Graphics("vnc", "::1"),
        guest_agent=True,
        firmware="bios",
        boot=("cdrom", "hd"),
        disks=(
            Disk(
                path="/vm/web.qcow2",
                size=20 * 1024**3,
                backing_image="/golden/debian.qcow2",
                delete_image=True,
            ),
            Disk(pool="fast", volume="web-data", format="raw", bus="scsi", size=1024 * MiB),
            Disk(
                path="/vm/web-copy.qcow2",
                read_only=True,
                clone_from=CloneSource(domain="db", disk=1),
            ),
            # A cdrom: raw, on sata, read-only, whatever the defaults of a disk say.
            Disk(path="/iso/debian.iso", format="raw", bus="sata", device="cdrom", read_only=True),
        ),
        interfaces=(
            Interface(name="eth0", mac=derived_mac("web", "eth0"), network="default"),
            Interface(
                name="eth1",
                mac="02:00:00:00:00:01",
                bridge="ovs0",
                virtualport="openvswitch",
                model="e1000e",
            ),
        ),
        deletion_policy=DeletionPolicy.ORPHAN,
    )


def test_defaults_of_a_minimal_manifest() -> None:
    [manifest] = parse_file(SOURCE, (HEAD + "  memory: 64Mi\n").encode())
    spec = DomainSpec.from_spec(manifest.spec, "web")
    assert spec == DomainSpec(memory=64 * MiB)
    assert (spec.vcpus_max, spec.memory_max) == (1, 64 * MiB)
    assert spec.graphics == Graphics("none", "127.0.0.1")


def test_an_empty_boot_list_means_what_libvirt_makes_of_it() -> None:
    # libvirt gives a definition without <boot> a <boot dev='hd'/>; the model must agree
    # or the domain would count as drifted, and be redefined, on every reconcile.
    [manifest] = parse_file(SOURCE, (HEAD + "  memory: 64Mi\n  os: {boot: []}\n").encode())
    assert DomainSpec.from_spec(manifest.spec, "web").boot == ("hd",)


def test_disk_attachment_keeps_only_what_libvirt_holds() -> None:
    disk = Disk(
        path="/vm/a.qcow2",
        size=MiB,
        backing_image="/b.qcow2",
        clone_from=CloneSource(path="/c"),
        delete_image=True,
    )
    assert disk.attachment() == Disk(path="/vm/a.qcow2")
    assert Disk(path="/iso/x", device="cdrom").attachment().read_only is True
    assert Disk(pool="p", volume="v").source == "p/v"


# -- derived MACs ------------------------------------------------------------------------------


def test_derived_macs_are_stable() -> None:
    # Golden values: a MAC that changed between kvmrec versions would renumber the network
    # of every guest (new DHCP leases, new interface names in some guests).
    assert derived_mac("web", "eth0") == "52:54:00:c3:14:42"
    assert derived_mac("web", "eth1") == "52:54:00:64:bb:10"
    assert derived_mac("db", "eth0") == "52:54:00:9f:18:f2"
    [a] = parse_file(
        SOURCE, (HEAD + "  memory: 64Mi\n  interfaces: [{name: eth0, network: n}]\n").encode()
    )
    [b] = parse_file(
        SOURCE, (HEAD + "  memory: 64Mi\n  interfaces: [{name: eth0, network: n}]\n").encode()
    )
    assert DomainSpec.from_spec(a.spec, "web").interfaces[0].mac == "52:54:00:c3:14:42"
    assert DomainSpec.from_spec(b.spec, "web") == DomainSpec.from_spec(a.spec, "web")


def test_derived_macs_differ_per_interface_and_per_domain() -> None:
    domains = [f"web-{i}" for i in range(16)]
    interfaces = [f"eth{j}" for j in range(16)]
    macs = [derived_mac(d, i) for d in domains for i in interfaces]
    assert len(set(macs)) == len(macs) == 256
    for mac in macs:
        assert MAC_PATTERN.match(mac), mac
        first = int(mac[:2], 16)
        assert first & 1 == 0, f"{mac} is multicast"
        assert first & 2 == 2, f"{mac} is not locally administered"


def test_the_same_interface_name_in_two_domains_gets_two_macs() -> None:
    body = "  memory: 64Mi\n  interfaces: [{name: eth0, bridge: br0}]\n"
    [manifest] = parse_file(SOURCE, (HEAD + body).encode())
    web = DomainSpec.from_spec(manifest.spec, "web").interfaces[0].mac
    db = DomainSpec.from_spec(manifest.spec, "db").interfaces[0].mac
    assert web != db
    assert (web, db) == (derived_mac("web", "eth0"), derived_mac("db", "eth0"))
