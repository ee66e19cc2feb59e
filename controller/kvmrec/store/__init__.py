"""Where kvmrec keeps what it was asked for and what it found.

``records`` holds the plain data types, ``base`` the ``Store`` interface split by concern,
``sqlite`` the single-host implementation (the standard library's sqlite3) and
``lock`` the one-controller-per-state-file lock. :func:`open` picks the implementation from
a URL, so callers never name one: a plain path or ``sqlite:///PATH`` is a sqlite state
file; ``etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`` the store of a fleet of hosts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kvmrec.store.base import Store, StoreError

if TYPE_CHECKING:
    from kvmrec.store.fleet import FleetControl, FleetParts, FleetView

__all__ = [
    "Store",
    "StoreError",
    "open",
    "open_control",
    "open_fleet",
    "open_fleet_view",
    "state_file",
]

_SQLITE = "sqlite://"
_MEMORY = ":memory:"


def state_file(where: str | Path) -> Path | None:
    """The sqlite state file ``where`` names (a path or ``sqlite:///PATH``); None when it
    names another store, or a private in-memory one. Reads nothing."""
    if isinstance(where, Path):
        return where
    if "://" not in where:
        return Path(where) if where != _MEMORY else None
    if where.startswith(_SQLITE):
        path = where[len(_SQLITE) :]
        return Path(path) if path and path != _MEMORY else None
    return None


def open(
    where: str | Path,
    *,
    create: bool = True,
    read_only: bool = False,
    host: str | None = None,
) -> Store:
    """The store at ``where``: a path or ``sqlite:///PATH`` (``sqlite://`` alone, or
    ``:memory:``, a private in-memory one), or ``etcd://HOST:PORT[,...][/PREFIX]`` (the
    prefix defaults to ``/kvmrec``).

    ``create``: make a missing state file (else StoreError; etcd needs none).
    ``read_only``: refuse every write (a state file is still upgraded to this kvmrec's
    schema when opened). ``host``: the host whose statuses an etcd store reads and writes
    (None: the newest of every host's); sqlite, one host's by nature, ignores it."""
    text = str(where)
    if isinstance(where, str) and "://" in text:
        scheme = text.split("://", 1)[0]
        if scheme == "sqlite":
            text = text[len(_SQLITE) :] or ":memory:"
        elif scheme == "etcd":
            return _etcd(text, read_only=read_only, host=host)
        else:
            raise StoreError(f"{text}: unknown store (a path, sqlite:///PATH or etcd://...)")
    # Imported here: a command that never opens a store does not pay for sqlite and peewee.
    from kvmrec.store.sqlite import SqliteStore

    return SqliteStore(Path(text), create=create, read_only=read_only)


def _etcd(url: str, *, read_only: bool, host: str | None) -> Store:
    # Imported here, as sqlite is: a command on a state file never loads the etcd client.
    from kvmrec.store.etcd.store import EtcdStore, parse_url

    endpoints, prefix = parse_url(url)
    try:
        return EtcdStore(endpoints, prefix=prefix, host=host, read_only=read_only)
    except ValueError as exc:
        raise StoreError(f"{url}: {exc}") from exc


def open_fleet(url: str, *, host: str, shared_kinds: frozenset[str]) -> tuple[Store, FleetParts]:
    """The etcd store at ``url`` as host ``host`` sees it, with the fleet's parts: its
    lease (the fence of every write from now on), hosts, placements, watch and election.
    ``shared_kinds``: the kinds one object of which applies on several hosts."""
    if not url.startswith("etcd://"):
        raise StoreError(f"{url}: a fleet host needs an etcd:// store")
    from kvmrec.store.etcd.fleet import EtcdFleet
    from kvmrec.store.etcd.store import EtcdStore

    store = _etcd(url, read_only=False, host=host)
    assert isinstance(store, EtcdStore)
    return store, EtcdFleet(store, host, shared_kinds=shared_kinds)


def open_fleet_view(url: str) -> FleetView:
    """The fleet in the etcd store at ``url`` as a read-only command sees it: its hosts,
    placements and objects, without a lease (nothing is registered, nothing written)."""
    if not url.startswith("etcd://"):
        raise StoreError(f"{url}: not a fleet's store (etcd://HOST:PORT[,...][/PREFIX])")
    from kvmrec.store.etcd.store import EtcdStore
    from kvmrec.store.etcd.view import EtcdFleetView

    store = _etcd(url, read_only=True, host=None)
    assert isinstance(store, EtcdStore)
    return EtcdFleetView(store)


def open_control(url: str) -> FleetControl:
    """The fleet in the etcd store at ``url`` as an operator's commands change it."""
    if not url.startswith("etcd://"):
        raise StoreError(f"{url}: hosts, placements and migrations live in an etcd:// store")
    from kvmrec.store.etcd.fleet import EtcdControl
    from kvmrec.store.etcd.store import EtcdStore

    store = _etcd(url, read_only=False, host=None)
    assert isinstance(store, EtcdStore)
    return EtcdControl(store)
