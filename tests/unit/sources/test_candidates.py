"""Candidate manifests (``kvmrec plan -f``): the names they take in the manifest directory
and how they are laid over a snapshot of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmrec.sources import candidates
from kvmrec.sources.scanning import DEFAULT_MAX_FILE_BYTES, scan


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    root = tmp_path / "manifests"
    (root / "team").mkdir(parents=True)
    (root / "a.yaml").write_text("a: 1\n")
    (root / "b.yaml").write_text("b: 1\n")
    (root / "team" / "c.yaml").write_text("c: 1\n")
    return root


def test_a_file_replaces_the_file_of_its_name_and_every_other_stays(
    manifests: Path, tmp_path: Path
) -> None:
    draft = tmp_path / "a.yaml"
    draft.write_text("a: 2\n")
    candidate = candidates.read(draft, manifests)
    assert dict(candidate.origins) == {"a.yaml": str(draft)}

    laid = candidates.overlay(scan(manifests), candidate)
    assert sorted(laid.files) == ["a.yaml", "b.yaml", "team/c.yaml"]
    assert laid.files["a.yaml"].data == b"a: 2\n"
    assert laid.files["b.yaml"].data == b"b: 1\n"
    assert laid.complete


def test_a_directory_gives_its_files_their_paths_in_it(manifests: Path, tmp_path: Path) -> None:
    drafts = tmp_path / "drafts"
    (drafts / "team").mkdir(parents=True)
    (drafts / "team" / "c.yaml").write_text("c: 2\n")
    (drafts / "new.json").write_text("{}")
    (drafts / "notes.txt").write_text("not a manifest")
    candidate = candidates.read(drafts, manifests)
    assert dict(candidate.origins) == {
        "new.json": str(drafts / "new.json"),
        "team/c.yaml": str(drafts / "team" / "c.yaml"),
    }
    laid = candidates.overlay(scan(manifests), candidate)
    assert sorted(laid.files) == ["a.yaml", "b.yaml", "new.json", "team/c.yaml"]
    assert laid.files["team/c.yaml"].data == b"c: 2\n"
    assert laid.files["team/c.yaml"].path == "team/c.yaml"


def test_a_file_already_in_the_manifest_directory_keeps_its_path_there(manifests: Path) -> None:
    candidate = candidates.read(manifests / "team" / "c.yaml", manifests)
    assert list(candidate.files) == ["team/c.yaml"]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        pytest.param("notes.txt", "not a manifest file name", id="suffix"),
        pytest.param(".hidden.yaml", "not a manifest file name", id="dotfile"),
        pytest.param("missing.yaml", "no such file or directory", id="missing"),
    ],
)
def test_what_the_directory_would_not_read_is_refused(
    manifests: Path, tmp_path: Path, name: str, reason: str
) -> None:
    path = tmp_path / name
    if name != "missing.yaml":
        path.write_text("a: 1\n")
    with pytest.raises(candidates.CandidateError, match=reason):
        candidates.read(path, manifests)


def test_a_file_over_the_size_limit_is_an_error_of_that_file(
    manifests: Path, tmp_path: Path
) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (DEFAULT_MAX_FILE_BYTES + 1))
    candidate = candidates.read(big, manifests)
    assert "too large" in candidate.errors["big.yaml"]
    laid = candidates.overlay(scan(manifests), candidate)
    assert laid.files["big.yaml"].data == b"" and "big.yaml" in laid.errors
