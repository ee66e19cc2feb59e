"""What an apply would change, field by field, judged as the store judges it."""

from __future__ import annotations

from datetime import UTC, datetime

from kvmrec import store as stores
from kvmrec.api.kinds import Manifest
from kvmrec.cli import store_diff

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
SPEC = {"memory": "64Mi", "disks": [{"path": "/a", "size": "1Gi"}], "os": {"boot": ["hd"]}}


def test_changes_are_paths_into_the_manifest_and_agree_with_the_store() -> None:
    store = stores.open(":memory:")
    try:
        first = Manifest("Domain", "a", SPEC, "a.yaml", 1, labels={"tier": "web"})
        assert store_diff.change(first, None).action == store_diff.CREATED
        store.apply(first, T0)
        same = store_diff.change(first, store.get(first.key))
        assert (same.action, same.generation, same.fields) == (store_diff.UNCHANGED, 1, [])
        spec = {
            "memory": "64Mi",
            "disks": [{"path": "/a", "size": "2Gi"}],
            "os": {"boot": ["hd", "cdrom"]},
            "vcpus": 2,
        }
        second = Manifest("Domain", "a", spec, "b.yaml", 1)
        planned = store_diff.change(second, store.get(first.key))
        assert planned.action == store_diff.CONFIGURED
        assert planned.generation == 2
        assert [(f.field, f.stored, f.applied) for f in planned.fields] == [
            ("spec.disks[0].size", "1Gi", "2Gi"),
            ("spec.os.boot", ["hd"], ["hd", "cdrom"]),
            ("spec.vcpus", None, 2),
            ("metadata.labels.tier", "web", None),
            ("source", "a.yaml", "b.yaml"),
        ]
        result = store.apply(second, T0)
        assert (result.changed, result.generation) == (True, planned.generation)
        # Labels alone: configured, the same generation (the spec digest did not move).
        third = Manifest("Domain", "a", spec, "b.yaml", 1, labels={"tier": "db"})
        relabelled = store_diff.change(third, store.get(first.key))
        assert (relabelled.action, relabelled.generation) == (store_diff.CONFIGURED, 2)
        assert store.apply(third, T0).changed
    finally:
        store.close()
