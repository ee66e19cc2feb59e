"""Objects stored by ``kvmrec apply`` (an absolute source) beside a watched directory:
a pass of the directory never deletes them and its guard does not count them, and a file
of the directory that defines one takes it over."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kvmrec import store as stores
from kvmrec.api.kinds import Manifest, ObjectKey
from kvmrec.engine.clock import FakeClock
from kvmrec.sources.manifests import GUARD_SOURCE, ManifestSync
from kvmrec.sources.scanning import FileContent, Snapshot
from kvmrec.store.base import Store

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


def snapshot(files: dict[str, str]) -> Snapshot:
    contents = {
        path: FileContent(path, text.encode(), hashlib.sha256(text.encode()).hexdigest())
        for path, text in sorted(files.items())
    }
    return Snapshot(files=contents, complete=True, error=None)


def doc(name: str) -> str:
    return (
        "apiVersion: kvmrec.io/v1alpha1\nkind: Domain\n"
        f"metadata:\n  name: {name}\nspec:\n  memory: 64Mi\n"
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = stores.open(tmp_path / "state.db")
    yield opened
    opened.close()


def test_a_directory_pass_leaves_applied_objects_alone(store: Store) -> None:
    sync = ManifestSync(store, FakeClock())
    sync.apply(snapshot({"a.yaml": doc("a"), "b.yaml": doc("b")}))
    applied = [Manifest("Domain", n, {"memory": "64Mi"}, f"/srv/{n}.yaml", 1) for n in "xyz"]
    store.apply_many(applied, T0)
    result = sync.apply(snapshot({"a.yaml": doc("a")}))
    assert result.deleting == [ObjectKey("Domain", "b")]
    assert GUARD_SOURCE not in result.errors  # 1 of 2 of the directory's, not 1 of 5
    deleting = {o.key.name: o.deleting for o in store.list()}
    assert deleting == {"a": False, "b": True, "x": False, "y": False, "z": False}
    # Emptied: the directory's last object goes; the applied ones stay.
    result = sync.apply(snapshot({}))
    assert result.deleting == [ObjectKey("Domain", "a")]
    # A file that defines an applied object takes it over, and then may delete it.
    sync.apply(snapshot({"x.yaml": doc("x")}))
    assert store.get(ObjectKey("Domain", "x")).source == "x.yaml"  # type: ignore[union-attr]
    assert sync.apply(snapshot({})).deleting == [ObjectKey("Domain", "x")]
