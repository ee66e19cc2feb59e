"""Where kvmrec keeps what it was asked for and what it found.

``records`` holds the plain data types, ``base`` the ``Store`` interface split by concern,
``sqlite`` the single-host implementation (the standard library's sqlite3) and
``lock`` the one-controller-per-state-file lock. :func:`open` picks the implementation from
a URL, so callers never name one: a plain path or ``sqlite:///PATH`` is a sqlite state
file; ``etcd://`` is where the store for a fleet of hosts plugs in.
"""

from __future__ import annotations

from pathlib import Path

from kvmrec.store.base import Store, StoreError

__all__ = ["Store", "StoreError", "open"]

_SQLITE = "sqlite://"


def open(where: str | Path, *, create: bool = True, read_only: bool = False) -> Store:
    """The store at ``where``: a path or ``sqlite:///PATH`` (``sqlite://`` alone, or
    ``:memory:``, a private in-memory one); ``etcd://...`` is not available yet.

    ``create``: make a missing state file (else StoreError). ``read_only``: refuse every
    write (the file is still upgraded to this kvmrec's schema when opened)."""
    text = str(where)
    if isinstance(where, str) and "://" in text:
        scheme = text.split("://", 1)[0]
        if scheme == "sqlite":
            text = text[len(_SQLITE) :] or ":memory:"
        elif scheme == "etcd":
            raise StoreError(f"{text}: the etcd store is not available in this kvmrec yet")
        else:
            raise StoreError(f"{text}: unknown store (a path, sqlite:///PATH or etcd://...)")
    # Imported here: a command that never opens a store does not pay for sqlite and peewee.
    from kvmrec.store.sqlite import SqliteStore

    return SqliteStore(Path(text), create=create, read_only=read_only)
