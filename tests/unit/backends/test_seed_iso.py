"""NoCloud seeds (backends/seed_iso.py): read back with pycdlib, byte for byte."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pycdlib
import pytest

from kvmrec.backends import seed_iso

FILES = {
    "user-data": b"#cloud-config\npassword: secret\nruncmd:\n  - [sh, -c, 'echo \xc3\xa9 > /x']\n",
    "meta-data": b"instance-id: iid-1\nlocal-hostname: web\n",
    "network-config": b"version: 2\nethernets: {}\n",
}


def test_a_seed_holds_exactly_its_files_under_their_cloud_init_names(tmp_path: Path) -> None:
    path = tmp_path / "web-cidata.iso"
    seed_iso.write(str(path), "web", FILES)
    ident, files = seed_iso.read(str(path))
    assert files == FILES
    assert ident == "kvmrec Domain/web cloud-init seed"
    # As cloud-init finds it: the volume label, and the Joliet names too.
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        assert iso.pvd.volume_identifier.decode().rstrip() == "cidata"
        names = sorted(
            c.file_identifier().decode("utf-16-be")
            for c in iso.list_children(joliet_path="/")
            if c.is_file()
        )
        assert names == ["meta-data", "network-config", "user-data"]
    finally:
        iso.close()
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["web-cidata.iso"]  # no temporary left


def test_blkid_sees_an_iso9660_labelled_cidata(tmp_path: Path) -> None:
    path = tmp_path / "seed.iso"
    seed_iso.write(str(path), "web", FILES)
    try:
        done = subprocess.run(
            ["blkid", "-o", "export", str(path)], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        pytest.skip("no blkid")
    assert "LABEL=cidata" in done.stdout and "TYPE=iso9660" in done.stdout


def test_ownership_is_per_domain(tmp_path: Path) -> None:
    path = tmp_path / "seed.iso"
    seed_iso.write(str(path), "web", FILES)
    assert seed_iso.owned(str(path), "web")
    assert not seed_iso.owned(str(path), "db")
    other = tmp_path / "other.iso"
    other.write_bytes(b"not an iso" * 100)
    assert not seed_iso.owned(str(other), "web")
    with pytest.raises(seed_iso.SeedError):
        seed_iso.read(str(other))


def test_the_digest_is_of_names_and_bytes() -> None:
    assert seed_iso.digest(FILES) == seed_iso.digest(dict(reversed(FILES.items())))
    assert seed_iso.digest(FILES) != seed_iso.digest({**FILES, "user-data": b"#cloud-config\n"})
    # A byte moved from one file to the other is another content.
    assert seed_iso.digest({"a": b"xy", "b": b""}) != seed_iso.digest({"a": b"x", "b": b"y"})


def test_a_directory_that_cannot_be_written_is_a_seed_error(tmp_path: Path) -> None:
    with pytest.raises(seed_iso.SeedError, match="cannot write the seed"):
        seed_iso.write(str(tmp_path / "missing" / "seed.iso"), "web", FILES)
