"""One controller per state file: an exclusive ``flock`` on ``<state>.lock``, held for life.

Two ``kvmrec run`` on one state file would both reconcile every object: two workers
starting the same guest, two services deleting each other's "orphans", two sets of
snapshots pruned by two clocks. sqlite would keep the file consistent, but not the host.
So ``run`` takes this lock before it opens the store, and a second one exits at once
naming the file and the holder's pid, without having opened, migrated or written the store.

Why here. The lock guards the state file, and the state file's layout (the database, its
``-wal`` and ``-shm`` siblings, and this ``.lock``) belongs to the store package. It is
not inside :class:`~kvmrec.store.sqlite.SqliteStore` because the store has readers that
must never be shut out (``kvmrec status`` and ``plan`` read the file while the service
runs, which WAL allows): the lock means "one controller", not "one opener". An etcd store
would give the same guarantee with a lease, in this package too.

Why ``flock`` on a file of its own. The kernel drops the lock when the holder dies, however
it dies (``kill -9``, OOM), so there is no stale pid file to clean up after a crash.
``flock`` locks belong to the open file description, unlike POSIX ``fcntl`` record locks,
which the process loses when it closes *any* descriptor of the file (as sqlite does with the
database, hence a separate file). The descriptor is not inherited by children (Python opens
it close-on-exec), so a ``qemu-img`` outliving us cannot keep the lock. The file is never
deleted: unlinking a lock file lets a second process lock the old inode while a third
creates a new one, and both would then hold "the" lock.

The holder writes its pid into the file, for the second instance's message only: the lock,
not the pid, is what excludes.

Whether a service holds a state file (:func:`in_use`), for a command run by hand that may
be looking at a state nobody serves: a shared ``flock`` tried without waiting fails while
the service holds its exclusive one. When it succeeds it is dropped at once; a service
starting in that instant would find the lock taken, so :meth:`StateLock.acquire` tries
again for a moment before it gives up (a service's lock is held for life, a probe's for
microseconds).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from kvmrec.store.base import StoreError

__all__ = ["StateInUse", "StateLock", "holder", "in_use", "lock_path"]


class StateInUse(StoreError):
    """Another process holds the state file's lock."""

    def __init__(self, state: Path, lock: Path, pid: int | None) -> None:
        holder = f"pid {pid}" if pid is not None else "a process whose pid is not recorded"
        super().__init__(
            f"{state} is in use by another kvmrec run ({holder}; lock {lock}); "
            "one controller per state file"
        )
        self.state = state
        self.lock = lock
        self.pid = pid


def lock_path(state: Path) -> Path:
    """``<state>.lock``, beside the state file: ``state.db`` -> ``state.db.lock``."""
    return state.with_name(state.name + ".lock")


class StateLock:
    """The exclusive lock of one state file; :meth:`acquire` it, :meth:`release` it (or
    let the process exit)."""

    def __init__(self, state: Path, fd: int) -> None:
        self.state = state
        self.path = lock_path(state)
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, state: Path) -> StateLock:
        """Take the lock without waiting.

        Raises :class:`StateInUse` when another process holds it, and ``StoreError`` when
        the lock file cannot be opened at all.
        """
        path = lock_path(state)
        try:
            # The store would create the directory anyway; the lock comes first now.
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(f"{path}: cannot open the state lock: {exc.strerror}") from exc
        try:
            _lock_outlasting_probes(fd)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise StateInUse(state, path, pid) from None
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"{path}: cannot lock: {exc.strerror}") from exc
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # a full disk must not stop us: the pid is only for the message
        return cls(state, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the lock up (idempotent). The file stays; see the module docstring."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # no pid of a process that no longer holds it
        os.close(fd)  # closing the last descriptor of the description drops the flock

    def __enter__(self) -> StateLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


# How long acquire() keeps trying while the lock is taken: far longer than a probe holds it.
_PROBE_PATIENCE = 0.2


def _lock_outlasting_probes(fd: int) -> None:
    """``flock(LOCK_EX)`` without waiting for a holder, but past an :func:`in_use` probe."""
    deadline = time.monotonic() + _PROBE_PATIENCE
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def in_use(state: Path) -> bool | None:
    """Whether a process (a ``kvmrec run``) holds the lock of ``state``; None when that
    cannot be told (the lock file cannot be read). Takes nothing from the holder and
    creates no file."""
    try:
        fd = os.open(lock_path(state), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False  # no service has ever run on it
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def holder(state: Path) -> int | None:
    """The pid of the service that holds the lock of ``state``, when one does and its pid
    is recorded; for a command that asks it to look again (SIGHUP)."""
    if not in_use(state):
        return None
    try:
        fd = os.open(lock_path(state), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return _read_pid(fd)
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        # Empty while the holder is between its flock and its write, or not ours.
        return None
