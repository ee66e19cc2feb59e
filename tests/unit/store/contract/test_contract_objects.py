"""Store contract: desired objects, generations and revisions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from store_contract import KEY, SPEC, at, manifest

from kvmrec.api.kinds import ObjectKey
from kvmrec.store.base import Store
from kvmrec.store.records import Status


def test_apply_creates_generation_1_and_a_revision(store: Store) -> None:
    m = manifest(labels={"tier": "web"}, annotations={"note": "x"})
    result = store.apply(m, at(0))
    assert (result.generation, result.changed, result.created) == (1, True, True)

    obj = store.get(KEY)
    assert obj is not None
    assert (obj.generation, obj.digest, obj.source) == (1, m.digest, "web.yaml")
    assert obj.deleting is False
    assert dict(obj.spec) == SPEC
    assert obj.labels == {"tier": "web"}
    assert obj.annotations == {"note": "x"}
    assert obj.uid

    [rev] = store.revisions(KEY)
    assert (rev.key, rev.generation, rev.digest, rev.source, rev.time) == (
        KEY,
        1,
        m.digest,
        "web.yaml",
        at(0),
    )
    assert dict(rev.spec) == SPEC


def test_same_manifest_again_is_unchanged_and_adds_no_revision(store: Store) -> None:
    store.apply(manifest(), at(0))
    before = store.get(KEY)
    # The same spec, written with its keys in another order.
    reordered = {"runStrategy": "Always", "vcpus": 1, "memory": "64Mi"}
    again = store.apply(manifest(spec=reordered), at(5))
    assert (again.generation, again.changed, again.created) == (1, False, False)
    assert len(store.revisions(KEY)) == 1
    assert store.get(KEY) == before


def test_changed_spec_is_generation_2_with_a_second_revision(store: Store) -> None:
    store.apply(manifest(), at(0))
    uid = store.get(KEY).uid  # type: ignore[union-attr]
    changed = manifest(spec=SPEC | {"vcpus": 2}, source="moved/web.yaml")
    result = store.apply(changed, at(3))
    assert (result.generation, result.changed, result.created) == (2, True, False)

    obj = store.get(KEY)
    assert obj is not None
    assert (obj.generation, obj.digest, obj.uid, obj.spec["vcpus"]) == (2, changed.digest, uid, 2)

    first, second = store.revisions(KEY)
    assert (first.generation, first.spec["vcpus"], first.source) == (1, 1, "web.yaml")
    assert (second.generation, second.digest, second.source, second.time) == (
        2,
        changed.digest,
        "moved/web.yaml",
        at(3),
    )
    assert second.digest != first.digest

    # Back to the first spec: a third generation, not a return to the first.
    assert store.apply(manifest(), at(4)).generation == 3
    assert [r.generation for r in store.revisions(KEY)] == [1, 2, 3]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"labels": {"tier": "db"}}, id="labels"),
        pytest.param({"annotations": {"kvmrec.io/adopt": "true"}}, id="annotations"),
        pytest.param({"source": "other.yaml"}, id="source"),
    ],
)
def test_metadata_only_change_is_changed_without_a_new_generation(
    store: Store, change: dict[str, object]
) -> None:
    store.apply(manifest(labels={"tier": "web"}), at(0))
    result = store.apply(manifest(**({"labels": {"tier": "web"}} | change)), at(1))  # type: ignore[arg-type]
    assert (result.generation, result.changed, result.created) == (1, True, False)
    assert len(store.revisions(KEY)) == 1
    obj = store.get(KEY)
    assert obj is not None
    for field, value in change.items():
        assert getattr(obj, field) == value


def test_mark_deleting_and_apply_undoes_it(store: Store) -> None:
    assert store.mark_deleting(KEY, at(0)) is False  # unknown
    store.apply(manifest(), at(0))
    assert store.mark_deleting(KEY, at(1)) is True
    assert store.get(KEY).deleting is True  # type: ignore[union-attr]
    assert store.mark_deleting(KEY, at(2)) is False  # already so

    result = store.apply(manifest(), at(3))
    assert (result.generation, result.changed, result.created) == (1, True, False)
    assert store.get(KEY).deleting is False  # type: ignore[union-attr]
    assert len(store.revisions(KEY)) == 1


def test_remove_drops_object_and_status_but_keeps_events(store: Store) -> None:
    store.apply(manifest(), at(0))
    store.apply(manifest("db"), at(0))
    store.record(KEY, Status(observed_generation=1), (), datetime.now(UTC))
    store.record(ObjectKey("Domain", "db"), Status(observed_generation=1), (), datetime.now(UTC))
    store.add_event(KEY, "Normal", "Created", "defined domain web", at(1))
    store.mark_deleting(KEY, at(1))
    assert store.remove(KEY)
    assert store.get(KEY) is None
    assert store.get_status(KEY) is None
    assert [o.key.name for o in store.list()] == ["db"]
    assert list(store.statuses()) == [ObjectKey("Domain", "db")]
    [event] = store.events(KEY)
    assert (event.reason, event.message, event.time) == ("Created", "defined domain web", at(1))
    assert store.remove(KEY)  # removing twice is harmless


def test_remove_keeps_an_object_applied_again_while_it_was_being_deleted(store: Store) -> None:
    store.apply(manifest(), at(0))
    store.record(KEY, Status(observed_generation=1), (), at(0))
    store.mark_deleting(KEY, at(1))
    store.apply(manifest(), at(2))  # its manifest back, while its live domain is undefined
    assert not store.remove(KEY)
    assert store.get(KEY) is not None and not store.get(KEY).deleting  # type: ignore[union-attr]
    assert store.get_status(KEY) == Status(observed_generation=1)
    assert store.keys() == [KEY]


def test_keys_follow_apply_and_remove(store: Store) -> None:
    assert store.keys() == []
    store.apply(manifest("b"), at(0))
    assert store.keys() == [ObjectKey("Domain", "b")]  # the cache is filled now
    store.apply(manifest("a"), at(0))
    store.mark_deleting(ObjectKey("Domain", "b"), at(1))
    assert store.keys() == [ObjectKey("Domain", "a"), ObjectKey("Domain", "b")]
    store.remove(ObjectKey("Domain", "b"))
    assert store.keys() == [ObjectKey("Domain", "a")]


def test_list_is_sorted_and_filters_by_kind(store: Store) -> None:
    for name in ("c", "a", "b"):
        store.apply(manifest(name), at(0))
    assert [o.key.name for o in store.list()] == ["a", "b", "c"]
    assert [o.key.name for o in store.list("Domain")] == ["a", "b", "c"]
    assert store.list("Network") == []


def test_apply_many_is_one_result_per_manifest_and_records_commits(store: Store) -> None:
    store.apply(manifest("old"), at(0))
    results = store.apply_many(
        [manifest("a", source="a.yaml"), manifest("b", source="b.yaml"), manifest("old")],
        at(1),
        commits={"a.yaml": "c0ffee"},
    )
    a, b, old = (ObjectKey("Domain", n) for n in ("a", "b", "old"))
    assert {k: (r.generation, r.changed, r.created) for k, r in results.items()} == {
        a: (1, True, True),
        b: (1, True, True),
        old: (1, False, False),
    }
    assert [r.commit for r in store.revisions(a)] == ["c0ffee"]
    assert [r.commit for r in store.revisions(b)] == [None]  # its file has no commit

    store.apply_many([manifest("a", spec=SPEC | {"vcpus": 3}, source="a.yaml")], at(2), "beef")
    assert [(r.generation, r.commit) for r in store.revisions(a)] == [(1, "c0ffee"), (2, "beef")]
    assert store.apply_many([], at(3)) == {}


def test_an_object_is_named_by_kind_and_name(store: Store) -> None:
    store.apply(manifest("web"), at(0))
    store.apply(manifest("web", kind="Network", spec={"bridge": "virbr9"}), at(0))
    network = ObjectKey("Network", "web")
    assert store.get(network).spec == {"bridge": "virbr9"}  # type: ignore[union-attr]
    assert store.get(KEY).spec == SPEC  # type: ignore[union-attr]
    assert store.keys() == [KEY, network]
    assert [o.key for o in store.list()] == [KEY, network]
    store.mark_deleting(network, at(1))
    store.remove(network)
    assert store.get(KEY) is not None


def test_an_unknown_object_has_nothing(store: Store) -> None:
    assert store.get(KEY) is None
    assert store.revisions(KEY) == []
    assert store.list() == []
    assert store.keys() == []
