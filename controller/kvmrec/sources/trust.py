"""StrictModes for the manifest directory: only manifests that nobody else could have written.

kvmrec runs as root and does what its manifests say: it defines guests, opens and creates
disk images, plugs interfaces into bridges. Whoever can write a manifest, or swap one for
another, can therefore act as root on the host. So, as sshd's StrictModes does for
``authorized_keys``, a manifest is loaded only if no one but root or the user kvmrec runs as
could have put it there. Owned by one of those and writable by neither group nor others
(the rule kvmrec/ownership.py also holds the configuration file to) must be:

- the manifest directory itself (symlinks followed);
- every manifest file, judged by the owner and mode of the very descriptor its bytes were
  read through (``FileContent.mode`` and ``uid``), so a file swapped in after the read is
  not what gets judged;
- every directory in which a name on the way from the manifest directory to the file is
  looked up, symlinks followed as the kernel follows them: a subdirectory, a Kubernetes
  ConfigMap's ``..data`` target (``..2024_01_01_...``), and for a symlink that leads out of
  the directory every directory of its target from ``/`` down. Whoever can write any of
  those can rename the file away and put their own in its place.

What a refusal does. A refused manifest directory makes the snapshot incomplete: nothing is
applied and nothing deleted, and the reason is reported. A refused file is reported as the
scan reports an unreadable one, in ``Snapshot.errors`` with empty data, so the consumer keeps
its last good state: a refusal is never read as a deletion. Nor is an absence that cannot be
trusted: a file the consumer knew (``expected``) that is gone from a directory someone else
can write may have been removed by that someone, so it is reported as refused too, and its
objects stay until the directory is fixed. Every message names the reason and the fix:
``writable by others (mode 0666); fix with chmod go-w, or run with --insecure-manifests``.

What it does not cover. The directories above the manifest directory are the operator's
choice and are not looked at (a test rig's directory under ``/tmp`` works as is). A writer
who opened a file before it was made safe keeps the descriptor (``chmod`` revokes nothing);
and ``--insecure-manifests`` turns the whole check off, for a directory whose writers are
trusted anyway.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Collection, Iterable
from pathlib import Path
from types import MappingProxyType

from kvmrec import ownership
from kvmrec.ownership import trusted_owners
from kvmrec.sources.scanning import FileContent, Snapshot

__all__ = ["INSECURE_FLAG", "enforce", "trusted_owners", "verdict"]

INSECURE_FLAG = "--insecure-manifests"

# The kernel's own limit on symlinks followed in one lookup (MAXSYMLINKS is 40 on Linux).
_MAX_SYMLINKS = 40

_EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()


def verdict(uid: int, mode: int, owners: Collection[int] | None = None) -> str | None:
    """Why a manifest, or a directory on its way, with this owner and mode cannot be
    trusted: the one rule of kvmrec/ownership.py, whose fix may be INSECURE_FLAG."""
    return ownership.verdict(uid, mode, owners, override=INSECURE_FLAG)


class _Judge:
    """The verdicts of one ``enforce`` call; each directory is stat'ed once."""

    def __init__(self, root: str, owners: Collection[int]) -> None:
        self.root = root
        self.owners = owners
        self._dirs: dict[str, str | None] = {root: None}  # the caller has judged it already

    def name(self, directory: str) -> str:
        """How a directory is named in a message: relative to the manifest directory when
        inside it, else absolute."""
        if directory.startswith(self.root + "/"):
            return directory[len(self.root) + 1 :]
        return directory

    def directory(self, directory: str) -> str | None:
        if directory not in self._dirs:
            try:
                st = os.stat(directory)
            except OSError as e:
                self._dirs[directory] = f"cannot be checked: {e.strerror}"
            else:
                self._dirs[directory] = verdict(st.st_uid, st.st_mode, self.owners)
        return self._dirs[directory]

    def untrusted_on_the_way(self, directories: Iterable[str]) -> str | None:
        for directory in directories:
            problem = self.directory(directory)
            if problem is not None:
                return f"directory {self.name(directory)}: {problem}"
        return None


def _lookup(root: str, rel: str) -> tuple[list[str], str | None]:
    """The directories in which each name on the way from ``root`` to ``rel`` is looked up,
    in order, symlinks followed as the kernel follows them; and where the way ends (None when
    a name on it does not exist: the directories up to the one that lacks it are listed).

    ``root`` must be a real path (no symlinks), which every directory listed then is too.
    Raises ``OSError`` for anything but a missing name (a symlink loop, say)."""
    looked_in: list[str] = []
    current = root
    pending = rel.split("/")[::-1]  # a stack: the next name on top
    links = 0
    while pending:
        name = pending.pop()
        if name in ("", "."):
            continue
        if name == "..":
            current = os.path.dirname(current)  # a real path: no symlink to undo
            continue
        if current not in looked_in:
            looked_in.append(current)
        path = os.path.join(current, name)
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return looked_in, None
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > _MAX_SYMLINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
            target = os.readlink(path)
            if target.startswith("/"):
                current = "/"
            pending.extend(target.split("/")[::-1])
        else:
            current = path
    return looked_in, current


def _file_problem(judge: _Judge, rel: str, content: FileContent) -> str | None:
    try:
        looked_in, end = _lookup(judge.root, rel)
    except OSError as e:
        return f"cannot be checked: {e.strerror}; keeping its last good state"
    problem = judge.untrusted_on_the_way(looked_in)
    if problem is not None:
        return problem
    if end is None:
        # Gone since it was read; the next scan says so. Until then it is not trusted.
        return "gone while it was being checked; keeping its last good state"
    uid, mode = content.uid, content.mode
    if uid is None or mode is None:
        try:
            st = os.stat(end)
        except OSError as e:
            return f"cannot be checked: {e.strerror}; keeping its last good state"
        uid, mode = st.st_uid, st.st_mode
    return verdict(uid, mode, judge.owners)


def _absence_problem(judge: _Judge, rel: str) -> str | None:
    try:
        looked_in, _ = _lookup(judge.root, rel)
    except OSError as e:
        return f"missing, and its absence cannot be checked: {e.strerror}"
    problem = judge.untrusted_on_the_way(looked_in)
    if problem is None:
        return None
    return f"missing, but its absence cannot be trusted, so its last good state is kept: {problem}"


def enforce(
    snapshot: Snapshot,
    root: Path | str,
    *,
    expected: Iterable[str] = (),
    owners: Collection[int] | None = None,
) -> Snapshot:
    """``snapshot`` of ``root`` with every manifest nobody else could have written, and
    the others refused (see the module docstring).

    ``expected``: paths (relative to ``root``) of files the consumer holds objects from; any
    of them missing from a directory that someone else can write is refused, not deleted.
    ``owners``: the uids trusted to own manifests; root and this process's user by default.
    """
    if not snapshot.complete:
        return snapshot
    owners = trusted_owners() if owners is None else owners
    top = os.fspath(root)
    try:
        real = os.path.realpath(top, strict=True)
        st = os.stat(real)
    except OSError as e:
        return _incomplete(f"manifest directory {top} is not accessible: {e.strerror}")
    problem = verdict(st.st_uid, st.st_mode, owners)
    if problem is not None:
        return _incomplete(f"manifest directory {top}: {problem}")

    judge = _Judge(real, owners)
    files = dict(snapshot.files)
    errors = dict(snapshot.errors)
    for rel, content in snapshot.files.items():
        if rel in errors:
            continue  # already held: nothing was read to be judged
        problem = _file_problem(judge, rel, content)
        if problem is not None:
            errors[rel] = problem
            files[rel] = FileContent(rel, b"", _EMPTY_DIGEST, content.mode, content.uid)
    for rel in sorted(set(expected) - set(files)):
        problem = _absence_problem(judge, rel)
        if problem is not None:
            errors[rel] = problem
            files[rel] = FileContent(rel, b"", _EMPTY_DIGEST)
    if errors == snapshot.errors and files.keys() == snapshot.files.keys():
        return snapshot
    return Snapshot(
        files=MappingProxyType(dict(sorted(files.items()))),
        complete=True,
        error=None,
        errors=MappingProxyType(dict(sorted(errors.items()))),
    )


def _incomplete(error: str) -> Snapshot:
    return Snapshot(
        files=MappingProxyType({}), complete=False, error=error, errors=MappingProxyType({})
    )
