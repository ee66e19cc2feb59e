"""osinfo-db read from its XML files (api/osinfo.py): the index, inheritance, close-match
errors naming file and field, and the defaults an osVariant gives only to open fields."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmrec.api import osinfo
from kvmrec.api.errors import ManifestError
from kvmrec.api.kinds import DomainSpec
from kvmrec.api.manifests import parse_file

_OS = """<?xml version="1.0"?>
<libosinfo version="0.0.1">
  <os id="{id}">
    {shorts}
    <name>{name}</name>
    {body}
  </os>
</libosinfo>
"""

VIRTIO = """<devices>
      <device id="http://pcisig.com/pci/1af4/1001"/>
      <device id="http://pcisig.com/pci/1af4/1000"/>
      <device id="http://qemu.org/chipset/x86/q35"/>
    </devices>
    <resources arch="all"><minimum><n-cpus>1</n-cpus><ram>536870912</ram></minimum></resources>"""


def write_os(root: Path, vendor: str, file: str, os_id: str, shorts: list[str], body: str) -> None:
    directory = root / "os" / vendor
    directory.mkdir(parents=True, exist_ok=True)
    text = _OS.format(
        id=os_id,
        shorts="".join(f"<short-id>{s}</short-id>" for s in shorts),
        name=shorts[0].title(),
        body=body,
    )
    (directory / file).write_text(text)


@pytest.fixture
def db_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A small osinfo-db of its own, in force through $OSINFO_SYSTEM_DIR."""
    root = tmp_path / "osinfo"
    write_os(root, "example.org", "lin-1.xml", "http://example.org/lin/1", ["lin1"], VIRTIO)
    write_os(
        root,
        "example.org",
        "lin-2.xml",
        "http://example.org/lin/2",
        ["lin2", "linbeta"],
        '<derives-from id="http://example.org/lin/1"/>'
        '<devices><device id="http://qemu.org/chipset/x86/q35" supported="false"/></devices>',
    )
    write_os(
        root,
        "example.org",
        "old.xml",
        "http://example.org/old/1",
        ["old1"],
        '<devices><device id="http://pcisig.com/pci/8086/10d3"/></devices>'
        '<firmware arch="x86_64" type="bios" supported="false"/>'
        '<resources arch="x86_64"><minimum><n-cpus>2</n-cpus><ram>4294967296</ram>'
        "</minimum></resources>",
    )
    (root / "os" / "example.org" / "broken.xml").write_text("<libosinfo><os")
    monkeypatch.setenv("OSINFO_SYSTEM_DIR", str(root))
    yield root


def test_the_index_reads_every_os_and_inherits_along_derives_from(db_dir: Path) -> None:
    db = osinfo.database()
    assert len(db) == 4  # four short ids; the file that does not parse is skipped
    lin1, lin2, old = db.get("lin1"), db.get("lin2"), db.get("old1")
    assert lin1 is not None and lin2 is not None and old is not None
    assert db.get("linbeta") == lin2 and db.by_id("http://example.org/lin/2") == lin2
    assert (lin1.virtio_disk, lin1.virtio_net, lin1.q35) == (True, True, True)
    # Devices come down derives-from; an own supported="false" takes one away.
    assert (lin2.virtio_disk, lin2.virtio_net, lin2.q35) == (True, True, False)
    assert (lin2.min_memory, lin2.min_vcpus) == (512 * 2**20, 1)  # inherited too
    assert old.efi_required and not old.virtio_disk
    assert old.defaults() == {
        "machine": "pc",
        "firmware": "efi",
        "diskBus": "ide",
        "nicModel": "e1000e",
    }
    assert lin1.defaults() == {
        "machine": "q35",
        "firmware": "bios",
        "diskBus": "virtio",
        "nicModel": "virtio",
    }


def test_the_index_is_built_once_per_directory(db_dir: Path) -> None:
    assert osinfo.database() is osinfo.database()


def domain(body: str) -> bytes:
    head = "apiVersion: kvmrec.io/v1alpha1\nkind: Domain\nmetadata:\n  name: web\nspec:\n"
    return (head + body).encode()


def test_an_unknown_variant_names_file_line_field_and_close_matches(db_dir: Path) -> None:
    with pytest.raises(ManifestError) as info:
        parse_file("web.yaml", domain("  memory: 1Gi\n  osVariant: lin3\n"))
    [problem] = info.value.problems
    text = str(problem)
    assert text.startswith("web.yaml: line 7:"), text
    assert "spec.osVariant: 'lin3' is not an OS in osinfo-db; did you mean lin1, lin2?" in text


def test_no_database_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSINFO_SYSTEM_DIR", str(tmp_path / "none"))
    with pytest.raises(ManifestError) as info:
        parse_file("web.yaml", domain("  memory: 1Gi\n  osVariant: debian11\n"))
    assert "osinfo-db is not installed here" in str(info.value.problems[0])


def test_defaults_fill_only_the_fields_the_manifest_leaves_open(db_dir: Path) -> None:
    body = (
        "  memory: 4Gi\n  vcpus: 2\n  osVariant: old1\n"
        "  disks:\n    - {path: /var/lib/libvirt/images/a.qcow2}\n"
        "    - {path: /var/lib/libvirt/images/b.qcow2, bus: virtio}\n"
        "    - {path: /var/lib/libvirt/images/c.iso, device: cdrom}\n"
        "  interfaces:\n    - {name: a, network: default}\n"
        "    - {name: b, network: default, model: rtl8139}\n"
    )
    [manifest] = parse_file("web.yaml", domain(body))
    spec = DomainSpec.from_spec(manifest.spec, "web")
    assert (spec.machine, spec.firmware) == ("pc", "efi")
    assert [d.bus for d in spec.disks] == ["ide", "virtio", "sata"]
    assert [i.model for i in spec.interfaces] == ["e1000e", "rtl8139"]
    assert spec.os_variant == "old1" and spec.os_id == "http://example.org/old/1"
    written = "  os: {machine: q35, firmware: bios}\n"
    [manifest] = parse_file("web.yaml", domain(body + written))
    spec = DomainSpec.from_spec(manifest.spec, "web")
    assert (spec.machine, spec.firmware) == ("q35", "bios")


def test_the_defaults_are_no_new_generation(db_dir: Path) -> None:
    """The digest is of what the operator wrote: defaults never move the generation."""
    [with_variant] = parse_file("web.yaml", domain("  memory: 1Gi\n  osVariant: lin1\n"))
    assert with_variant.spec["os"]["machine"] == "q35"
    assert "machine" not in with_variant.digest


def test_without_a_variant_nothing_is_defaulted_from_osinfo(db_dir: Path) -> None:
    [manifest] = parse_file("web.yaml", domain("  memory: 64Mi\n"))
    spec = DomainSpec.from_spec(manifest.spec, "web")
    assert spec.machine is None and spec.os_id is None and spec.firmware == "bios"


def test_below_minimum_names_each_field(db_dir: Path) -> None:
    old = osinfo.database().get("old1")
    assert old is not None
    assert old.below_minimum(4 * 2**30, 2) == []
    assert old.below_minimum(2**30, 1) == [
        "spec.memory 1024 MiB is below the 4096 MiB Old1 needs",
        "spec.vcpus 1 is below the 2 Old1 needs",
    ]


@pytest.mark.skipif(not Path("/usr/share/osinfo/os").is_dir(), reason="no osinfo-db here")
def test_the_hosts_osinfo_db(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OSINFO_SYSTEM_DIR", raising=False)
    debian = osinfo.database().get("debian11")
    assert debian is not None and debian.id == "http://debian.org/debian/11"
    assert debian.virtio_disk and debian.virtio_net and debian.q35
    assert "debian11" in osinfo.database().close_matches("debain11")
