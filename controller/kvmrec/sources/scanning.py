"""Scanning the manifest directory: every manifest file in it at one moment, read whole.

A :class:`Snapshot` holds every manifest file present, with its bytes and their sha256. This
module knows nothing of YAML or kinds, nor of watching (``sources/directory.py`` decides when
to scan); the consumer parses and diffs.

What counts as a manifest. Regular files named ``*.yaml``, ``*.yml`` or ``*.json``
(case-sensitive, as ``kubectl apply -f DIR`` does), found recursively, with symlinks
followed. Names starting with a dot are skipped at every level: dotfiles, ``.git``, editor
swap files, and the ConfigMap internals ``..data`` and ``..2024_01_01_...``; the ConfigMap's
visible entries are top-level symlinks into ``..data`` and are read through it. Editor and
package-manager leftovers (``*~``, ``*.swp``, ``#*#``, ``*.tmp``, ``*.dpkg-new``, ...) are
skipped too, and so is anything that is not a regular file once symlinks are resolved.

What a snapshot promises. ``complete=False`` means "I could not see the whole directory"
(missing, unmounted, unreadable, replaced while listing): a file missing from such a
snapshot must never be read as a deletion. ``errors`` names files that exist but whose
content could not be taken (unreadable, larger than ``max_file_bytes``); each of them is
also in ``files``, with empty data, so the consumer keeps its last good state of that file
instead of deleting it. A file deleted between listing and reading is simply absent: it is
gone, and the next snapshot would say so anyway. A file caught half-written is delivered as
it was; the write's own events schedule another scan that delivers the finished file.

Whether a file may be trusted at all (who could have written it) is not decided here:
each file carries the owner and mode it was read with, and ``sources/trust.py`` judges them,
with the directories on its way, through the directory source's ``vet`` hook.

One caveat the source cannot fix: when a volume is unmounted, its mount point usually stays
behind as an empty directory, which looks exactly like an operator deleting every manifest.
Consumers should refuse to prune everything on an empty snapshot unless told to (Argo CD's
``allowEmpty: false``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "FileContent",
    "Snapshot",
    "is_manifest_name",
    "scan",
]

# One mebibyte is far beyond any sane manifest (Kubernetes caps a ConfigMap at 1 MiB), yet
# small enough that a log file or disk image copied into the directory by mistake is not
# read into memory on every scan.
DEFAULT_MAX_FILE_BYTES = 1_048_576

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")

# Leftovers of editors (emacs ``~``/``#x#``, vim ``.swp``/``.swx``), partial downloads and
# package managers (``.dpkg-new``, ``.rpmnew``, ``.rpmsave``). Names starting with a dot,
# which covers emacs lock files ``.#x``, are skipped before these patterns are consulted.
IGNORED_PATTERNS = ("*~", "*.swp", "*.swx", "#*#", "*.tmp", "*.part", "*.dpkg-*", "*.rpm*")
_IGNORED = re.compile("|".join(fnmatch.translate(p) for p in IGNORED_PATTERNS))


@dataclass(frozen=True)
class FileContent:
    """One manifest file as read from disk."""

    path: str
    """Relative to the directory, with POSIX separators: ``web.yaml``, ``team-a/db.yml``."""
    data: bytes
    """The raw bytes; empty when the file is listed in :attr:`Snapshot.errors`."""
    digest: str
    """sha256 hex of :attr:`data`."""
    # Taken from the descriptor the bytes were read through, so that the owner and mode
    # judged by sources/trust.py are those of this very content, not of a file that
    # replaced it after the read. None when the content was not read from disk.
    mode: int | None = None
    """``st_mode`` of the file that was read."""
    uid: int | None = None
    """``st_uid`` of the file that was read."""


@dataclass(frozen=True)
class Snapshot:
    """Every manifest file in the directory at one moment; see the module docstring."""

    files: Mapping[str, FileContent]
    """Every manifest file currently present, by relative path, sorted by path."""
    complete: bool
    """False when the directory could not be seen whole: absent files are not deletions."""
    error: str | None
    """Why the snapshot is incomplete; None when it is complete."""
    # Defaulted so that consumers and their tests can build a snapshot from the three
    # original fields; the source itself always fills it in.
    errors: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Relative path -> why the content of that file could not be taken (it is in
    :attr:`files` with empty data): keep the last good state of those files."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_ignored(name: str) -> bool:
    return name.startswith(".") or _IGNORED.match(name) is not None


def is_manifest_name(name: str) -> bool:
    """Whether a file of this name (its last component) is read as a manifest."""
    return name.endswith(MANIFEST_SUFFIXES) and not _is_ignored(name)


def _too_large(size: int, limit: int) -> str:
    mib = " (1 MiB)" if limit == DEFAULT_MAX_FILE_BYTES else ""
    return (
        f"too large: {size} bytes, over the limit of {limit} bytes{mib} for one manifest "
        "file; not read (split it into several files)"
    )


def _incomplete(error: str) -> Snapshot:
    return Snapshot(
        files=MappingProxyType({}), complete=False, error=error, errors=MappingProxyType({})
    )


class _Walk:
    """The mutable state of one :func:`scan`, gathered into sorted immutable maps at the end."""

    def __init__(self, max_file_bytes: int) -> None:
        self.max_file_bytes = max_file_bytes
        self.files: dict[str, FileContent] = {}
        self.errors: dict[str, str] = {}
        self.unlisted: list[str] = []  # subdirectories that could not be listed, and why
        # (st_dev, st_ino) of every directory entered: a symlink back up the tree (or two
        # links to one directory) must not make the walk loop or report a file twice.
        self.seen_dirs: set[tuple[int, int]] = set()

    def walk(self, directory: str, prefix: str) -> None:
        try:
            with os.scandir(directory) as it:
                names = sorted(entry.name for entry in it)
        except OSError as e:
            if not prefix:
                raise  # the directory itself: the caller makes the snapshot incomplete
            if isinstance(e, FileNotFoundError):
                return  # removed since its parent was listed: its files are gone too
            # Its files may well exist; we cannot tell, so this snapshot cannot be complete.
            self.unlisted.append(f"{prefix.rstrip('/')}: {e.strerror}")
            return
        for name in names:
            if _is_ignored(name):
                continue
            path = os.path.join(directory, name)
            rel = prefix + name
            try:
                # Follows symlinks: ConfigMap entries and operator-made links are read
                # through; what matters is what the link resolves to.
                st = os.stat(path)
            except FileNotFoundError:
                continue  # vanished since the listing, or a dangling symlink: not present
            except OSError as e:
                if name.endswith(MANIFEST_SUFFIXES):
                    self.errors[rel] = f"unreadable: {e.strerror}"
                    self.files[rel] = FileContent(rel, b"", _sha256(b""))
                continue
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key not in self.seen_dirs:
                    self.seen_dirs.add(key)
                    self.walk(path, rel + "/")
            elif stat.S_ISREG(st.st_mode) and name.endswith(MANIFEST_SUFFIXES):
                self.read(path, rel)

    def read(self, path: str, rel: str) -> None:
        try:
            # O_NONBLOCK: if the file was swapped for a FIFO since the stat, opening it must
            # not hang the scan waiting for a writer. It has no effect on regular files.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return
        except OSError as e:
            self.errors[rel] = f"unreadable: {e.strerror}"
            self.files[rel] = FileContent(rel, b"", _sha256(b""))
            return
        with open(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                return
            try:
                # One byte past the limit tells a file that grew while we read it from
                # one that is exactly at the limit, without trusting st_size.
                data = b"" if st.st_size > self.max_file_bytes else self._read(f, st.st_size)
            except OSError as e:
                self.errors[rel] = f"unreadable: {e.strerror}"
                self.files[rel] = FileContent(rel, b"", _sha256(b""))
                return
        if st.st_size > self.max_file_bytes or len(data) > self.max_file_bytes:
            size = max(st.st_size, len(data))
            self.errors[rel] = _too_large(size, self.max_file_bytes)
            data = b""
        self.files[rel] = FileContent(rel, data, _sha256(data), st.st_mode, st.st_uid)

    def _read(self, f: BinaryIO, size: int) -> bytes:
        """The file's bytes, at most one past the limit: what ``size`` says and one more,
        and only if it grew meanwhile the rest up to the limit (a read of the limit itself
        would allocate a megabyte for every file)."""
        data = f.read(size + 1)
        if len(data) > size:
            data += f.read(self.max_file_bytes + 1 - len(data))
        return data


def scan(root: Path, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> Snapshot:
    """List and read every manifest file below ``root``; never raises for filesystem errors.

    A missing or unlistable ``root`` gives an incomplete, empty snapshot; an unlistable
    subdirectory gives an incomplete snapshot holding everything else that was read.
    """
    top = os.fspath(root)
    try:
        before = os.stat(top)
    except OSError as e:
        return _incomplete(f"manifest directory {top} is not accessible: {e.strerror}")
    if not stat.S_ISDIR(before.st_mode):
        return _incomplete(f"manifest directory {top} is not a directory")
    walk = _Walk(max_file_bytes)
    walk.seen_dirs.add((before.st_dev, before.st_ino))
    try:
        walk.walk(top, "")
    except OSError as e:
        return _incomplete(f"manifest directory {top} cannot be listed: {e.strerror}")
    try:
        after = os.stat(top)
    except OSError:
        after = None
    # ``rm -r`` empties a directory before removing it, and an unmount or a re-created
    # directory swaps it under us: a listing taken across such a change is not the directory
    # as it stands, and an empty one must not be mistaken for "all manifests deleted".
    if after is None or (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
        return _incomplete(f"manifest directory {top} was removed or replaced while scanning")
    error = "cannot list " + "; ".join(walk.unlisted) if walk.unlisted else None
    return Snapshot(
        files=MappingProxyType(dict(sorted(walk.files.items()))),
        complete=error is None,
        error=error,
        errors=MappingProxyType(dict(sorted(walk.errors.items()))),
    )
