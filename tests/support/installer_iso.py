"""Installer ISOs for the tests, made with pycdlib: a few files at the paths an installer's
media keeps them (Rock Ridge and Joliet names beside the ISO 9660 ones)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import pycdlib


def _iso_dir(name: str) -> str:
    return name.upper().replace(".", "_")[:8]


def _iso_file(name: str) -> str:
    stem, _, ext = name.upper().partition(".")
    return f"{stem.replace('-', '_')[:8]}.{ext.replace('.', '_')[:3]};1"


def write(path: Path, files: Mapping[str, bytes], label: str = "INSTALLER") -> Path:
    """An ISO at ``path`` holding ``files`` (relative path -> bytes)."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=label, joliet=3, rock_ridge="1.09")
    made: set[str] = set()
    for rel in sorted(files):
        *dirs, name = rel.split("/")
        iso_parent = ""
        for depth, directory in enumerate(dirs):
            iso_dir = f"{iso_parent}/{_iso_dir(directory)}"
            joliet = "/" + "/".join(dirs[: depth + 1])
            if joliet not in made:
                iso.add_directory(iso_dir, rr_name=directory, joliet_path=joliet)
                made.add(joliet)
            iso_parent = iso_dir
        data = files[rel]
        iso.add_fp(
            io.BytesIO(data),
            len(data),
            f"{iso_parent}/{_iso_file(name)}",
            rr_name=name,
            joliet_path="/" + rel,
        )
    iso.write(str(path))
    iso.close()
    return path
