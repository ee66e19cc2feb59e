"""Candidate manifests: files not yet in the manifest directory, laid over a snapshot of it,
so that ``kvmrec plan -f`` shows what dropping them in would do.

A candidate is a file or a directory of files. Each candidate file takes the name it would
have in the manifest directory: a file its own name, a directory's files their paths inside
it (and a file that is already in the manifest directory, its path there). Laid over the
directory, a candidate file replaces the file of that name and every other file stays: an
object no candidate file mentions is not deleted, while one a replaced file held and its
candidate no longer does is.

The candidate files are read as the directory's are (the names it takes, the size limit);
who owns them is not judged here, since the copy in the directory is what the service
judges. ``origins`` keeps the path the operator gave, for messages.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

from kvmrec.sources.scanning import (
    DEFAULT_MAX_FILE_BYTES,
    FileContent,
    Snapshot,
    is_manifest_name,
    scan,
)

__all__ = ["Candidate", "CandidateError", "overlay", "read"]


class CandidateError(Exception):
    """The candidate cannot be read at all (missing, not a manifest file name)."""


@dataclass(frozen=True)
class Candidate:
    files: Mapping[str, FileContent]  # by the name each file takes in the manifest directory
    origins: Mapping[str, str]  # that name -> the candidate file's own path
    errors: Mapping[str, str]  # name -> why its content could not be taken (empty in files)


def _name(path: Path, manifests: Path, fallback: str) -> str:
    """The name ``path`` takes in the manifest directory."""
    try:
        return path.resolve().relative_to(manifests.resolve()).as_posix()
    except ValueError:
        return fallback


def read(path: Path, manifests: Path) -> Candidate:
    """Raises ``CandidateError`` when ``path`` is neither a directory nor a manifest file."""
    if path.is_dir():
        snapshot = scan(path)
        if not snapshot.complete:
            raise CandidateError(snapshot.error or f"{path}: cannot be read")
        names = {rel: _name(path / rel, manifests, rel) for rel in snapshot.files}
        return Candidate(
            files={names[rel]: replace(c, path=names[rel]) for rel, c in snapshot.files.items()},
            origins={names[rel]: str(path / rel) for rel in snapshot.files},
            errors={names[rel]: reason for rel, reason in snapshot.errors.items()},
        )
    if not path.exists():
        raise CandidateError(f"{path}: no such file or directory")
    if not is_manifest_name(path.name):
        raise CandidateError(
            f"{path}: not a manifest file name; the manifest directory reads only *.yaml, "
            "*.yml and *.json files whose names do not start with a dot"
        )
    name = _name(path, manifests, path.name)
    try:
        with path.open("rb") as f:
            data = f.read(DEFAULT_MAX_FILE_BYTES + 1)  # the service reads no more
    except OSError as exc:
        raise CandidateError(f"{path}: unreadable: {exc.strerror}") from None
    errors = {}
    if len(data) > DEFAULT_MAX_FILE_BYTES:
        errors[name] = f"too large: over the limit of {DEFAULT_MAX_FILE_BYTES} bytes"
        data = b""
    content = FileContent(name, data, hashlib.sha256(data).hexdigest())
    return Candidate(files={name: content}, origins={name: os.fspath(path)}, errors=errors)


def overlay(snapshot: Snapshot, candidate: Candidate) -> Snapshot:
    """``snapshot`` with the candidate's files in place of those of the same names."""
    files = dict(snapshot.files)
    errors = {k: v for k, v in snapshot.errors.items() if k not in candidate.files}
    files.update(candidate.files)
    errors.update(candidate.errors)
    return Snapshot(
        files=MappingProxyType(dict(sorted(files.items()))),
        complete=snapshot.complete,
        error=snapshot.error,
        errors=MappingProxyType(dict(sorted(errors.items()))),
    )
