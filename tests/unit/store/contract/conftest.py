"""The store contract: every test in this folder runs against every store implementation.

An implementation joins by adding a ``pytest.param`` to ``IMPLEMENTATIONS``: a function that
prepares an empty store in ``tmp_path`` and returns how to open it (each call a new client
of the same store, as a second process would be).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from store_contract import Opener

from kvmrec import store as stores
from kvmrec.store.base import Store


def _sqlite(tmp_path: Path) -> Opener:
    url = f"sqlite://{tmp_path / 'state' / 'kvmrec.db'}"

    def opener(*, read_only: bool = False) -> Store:
        return stores.open(url, read_only=read_only)

    return opener


IMPLEMENTATIONS = [pytest.param(_sqlite, id="sqlite")]


@pytest.fixture(params=IMPLEMENTATIONS)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens a new client of the one store of this test (``read_only=True``: a reader)."""
    prepare: Callable[[Path], Opener] = request.param
    return prepare(tmp_path)


@pytest.fixture
def store(opener: Opener) -> Iterator[Store]:
    s = opener()
    yield s
    s.close()
