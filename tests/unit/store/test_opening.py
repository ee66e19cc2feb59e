"""``kvmrec.store.open``: which store a path or URL names."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from kvmrec import store as stores
from kvmrec.api.kinds import ObjectKey
from kvmrec.store.base import StoreError

KEY = ObjectKey("Domain", "web")
NOW = datetime(2024, 5, 1, tzinfo=UTC)


@pytest.mark.parametrize("as_url", [False, True], ids=["path", "sqlite-url"])
def test_a_path_or_sqlite_url_is_a_state_file(tmp_path: Path, as_url: bool) -> None:
    path = tmp_path / "state" / "kvmrec.db"
    store = stores.open(f"sqlite://{path}" if as_url else path)
    store.add_event(KEY, "Normal", "Created", "", NOW)
    store.close()
    assert path.is_file()
    again = stores.open(str(path), create=False)
    try:
        assert [e.reason for e in again.events()] == ["Created"]
    finally:
        again.close()


def test_sqlite_without_a_path_is_a_private_store_in_memory(tmp_path: Path) -> None:
    store = stores.open("sqlite://")
    try:
        store.add_event(KEY, "Normal", "Created", "", NOW)
        assert len(store.events()) == 1
    finally:
        store.close()


@pytest.mark.parametrize("read_only", [False, True])
def test_a_missing_file_is_not_created_unless_asked(tmp_path: Path, read_only: bool) -> None:
    path = tmp_path / "nowhere" / "state.db"
    with pytest.raises(StoreError, match="no state file"):
        stores.open(path, create=False, read_only=read_only)
    with pytest.raises(StoreError, match="no state file"):
        stores.open(path, read_only=True)  # a reader never creates one
    assert not path.parent.exists()


@pytest.mark.parametrize(
    ("url", "prefix"),
    [
        ("etcd://127.0.0.1:1", "/kvmrec"),
        ("etcd://127.0.0.1:1/", "/kvmrec"),
        ("etcd://127.0.0.1:1,127.0.0.1:2/fleet-a", "/fleet-a"),
    ],
)
def test_an_etcd_that_does_not_answer_is_named_in_the_error(url: str, prefix: str) -> None:
    store = stores.open(url, read_only=True, host="h1")
    try:
        assert store.prefix == prefix  # type: ignore[attr-defined]
        with pytest.raises(StoreError, match=r"etcd at 127\.0\.0\.1:\d does not answer"):
            store.get(KEY)
    finally:
        store.close()


def test_a_bad_etcd_endpoint_is_refused() -> None:
    with pytest.raises(StoreError, match=r"etcd://127\.0\.0\.1:abc/x: .*[Pp]ort"):
        stores.open("etcd://127.0.0.1:abc/x")


def test_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(StoreError, match="unknown store"):
        stores.open("redis://localhost")
