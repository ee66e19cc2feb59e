"""The store contract: every test in this folder runs against every store implementation.

An implementation joins by adding a ``pytest.param`` to ``IMPLEMENTATIONS``: an
``Implementation`` whose ``prepare`` makes an empty store for one test and returns how to
open it (each call a new client of the same store, as a second process would be), with
what it declares where stores may differ (``capabilities``, used by the few tests of those
differences). The etcd params use the stack's etcd (``support.etcd``) under a prefix of
their own, deleted afterwards, and are marked ``integration``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from store_contract import Capabilities, Opener

from kvmrec import store as stores
from kvmrec.store.base import Store
from support import etcd

Cleanup = Callable[[Callable[[], None]], None]


@dataclass(frozen=True)
class Implementation:
    prepare: Callable[[Path, Cleanup], Opener]
    capabilities: Capabilities


def _sqlite(tmp_path: Path, cleanup: Cleanup) -> Opener:
    url = f"sqlite://{tmp_path / 'state' / 'kvmrec.db'}"

    def opener(*, read_only: bool = False) -> Store:
        return stores.open(url, read_only=read_only)

    return opener


def _etcd(host: str | None) -> Callable[[Path, Cleanup], Opener]:
    def prepare(tmp_path: Path, cleanup: Cleanup) -> Opener:
        endpoints, prefix = etcd.private_prefix(cleanup)
        url = f"etcd://{endpoints}{prefix}"

        def opener(*, read_only: bool = False) -> Store:
            return stores.open(url, read_only=read_only, host=host)

        return opener

    return prepare


IMPLEMENTATIONS = [
    pytest.param(
        Implementation(_sqlite, Capabilities(writes_quiet_reconciles=True, host=None)),
        id="sqlite",
    ),
    pytest.param(
        Implementation(_etcd(None), Capabilities(writes_quiet_reconciles=False, host=None)),
        id="etcd",
        marks=pytest.mark.integration,
    ),
    pytest.param(
        Implementation(_etcd("h1"), Capabilities(writes_quiet_reconciles=False, host="h1")),
        id="etcd-host",
        marks=pytest.mark.integration,
    ),
]


@pytest.fixture(params=IMPLEMENTATIONS)
def implementation(request: pytest.FixtureRequest) -> Implementation:
    chosen: Implementation = request.param
    return chosen


@pytest.fixture
def capabilities(implementation: Implementation) -> Capabilities:
    """Where this implementation differs from the others, by design."""
    return implementation.capabilities


@pytest.fixture
def opener(
    implementation: Implementation, request: pytest.FixtureRequest, tmp_path: Path
) -> Opener:
    """Opens a new client of the one store of this test (``read_only=True``: a reader)."""
    return implementation.prepare(tmp_path, request.addfinalizer)


@pytest.fixture
def store(opener: Opener) -> Iterator[Store]:
    s = opener()
    yield s
    s.close()
