"""ManifestSync: directory snapshots -> desired state in the store, and what it refuses to do."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path

import pytest

from kvmrec import store as stores
from kvmrec.api.kinds import ObjectKey
from kvmrec.engine.clock import FakeClock
from kvmrec.sources.manifests import GUARD_SOURCE, ManifestSync
from kvmrec.sources.scanning import FileContent, Snapshot
from kvmrec.store.base import Store
from kvmrec.store.records import DeletionApproval


def doc(name: str, memory: str = "64Mi", extra: str = "") -> str:
    return (
        "apiVersion: kvmrec.io/v1alpha1\nkind: Domain\n"
        f"metadata:\n  name: {name}\nspec:\n  memory: {memory}\n{extra}"
    )


def docs(*names: str) -> str:
    return "---\n".join(doc(n) for n in names)


def snapshot(
    files: Mapping[str, str | bytes],
    *,
    errors: Mapping[str, str] | None = None,
    complete: bool = True,
    error: str | None = None,
) -> Snapshot:
    contents = {}
    for path in sorted(files):
        raw = files[path]
        data = raw.encode() if isinstance(raw, str) else raw
        contents[path] = FileContent(path, data, hashlib.sha256(data).hexdigest())
    return Snapshot(files=contents, complete=complete, error=error, errors=dict(errors or {}))


def key(name: str) -> ObjectKey:
    return ObjectKey("Domain", name)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = stores.open(tmp_path / "state.db")
    yield s
    s.close()


@pytest.fixture
def sync(store: Store, clock: FakeClock) -> ManifestSync:
    return ManifestSync(store, clock)


def names(store: Store, *, deleting: bool | None = None) -> list[str]:
    return [o.key.name for o in store.list() if deleting is None or o.deleting == deleting]


def errors(store: Store) -> dict[str, str]:
    return {e.source: e.message for e in store.source_errors()}


# -- the ordinary flow -----------------------------------------------------------------------


def test_new_files_are_applied_and_reported_as_changed(sync: ManifestSync, store: Store) -> None:
    result = sync.apply(snapshot({"web.yaml": docs("web-1", "web-2"), "db.yml": doc("db")}))
    assert sorted(result.changed) == [key("db"), key("web-1"), key("web-2")]
    assert (result.deleting, dict(result.errors), result.refused) == ([], {}, 0)
    assert names(store) == ["db", "web-1", "web-2"]
    assert store.get(key("web-2")).source == "web.yaml"  # type: ignore[union-attr]
    assert store.get(key("db")).source == "db.yml"  # type: ignore[union-attr]
    assert errors(store) == {}


def test_an_unchanged_snapshot_changes_nothing(sync: ManifestSync, store: Store) -> None:
    snap = snapshot({"web.yaml": docs("web-1", "web-2")})
    sync.apply(snap)
    again = sync.apply(snap)
    assert (again.changed, again.deleting, dict(again.errors)) == ([], [], {})
    # An equal snapshot built afresh (no parse cache hit on identity) is just as quiet.
    fresh = sync.apply(snapshot({"web.yaml": docs("web-1", "web-2")}))
    assert fresh.changed == []
    assert [r.generation for r in store.revisions(key("web-1"))] == [1]


def test_an_edited_file_changes_only_the_edited_object(sync: ManifestSync, store: Store) -> None:
    sync.apply(snapshot({"web.yaml": docs("a", "b")}))
    result = sync.apply(snapshot({"web.yaml": doc("a") + "---\n" + doc("b", "128Mi")}))
    assert result.changed == [key("b")]
    assert store.get(key("b")).generation == 2  # type: ignore[union-attr]
    assert store.get(key("a")).generation == 1  # type: ignore[union-attr]


def test_a_document_removed_from_a_file_is_marked_deleting(
    sync: ManifestSync, store: Store
) -> None:
    sync.apply(snapshot({"web.yaml": docs("a", "b", "c")}))
    result = sync.apply(snapshot({"web.yaml": docs("a", "c")}))
    assert result.deleting == [key("b")]
    assert names(store, deleting=True) == ["b"]


# -- files in error keep their last good state -----------------------------------------------


def test_a_file_that_becomes_invalid_keeps_its_objects_while_others_apply(
    sync: ManifestSync, store: Store
) -> None:
    sync.apply(snapshot({"a.yaml": docs("a1", "a2"), "b.yaml": doc("b1")}))
    broken = doc("a1") + "---\n" + doc("a2", extra="  runStrategy: Sometimes\n")
    result = sync.apply(snapshot({"a.yaml": broken, "b.yaml": doc("b1", "256Mi")}))

    assert result.changed == [key("b1")]
    assert result.deleting == []
    assert names(store, deleting=False) == ["a1", "a2", "b1"]
    assert store.get(key("b1")).spec["memory"] == "256Mi"  # type: ignore[union-attr]
    message = errors(store)["a.yaml"]
    assert set(errors(store)) == {"a.yaml"}
    assert message.startswith("line 14: document 2: Domain/a2: spec.runStrategy: must be one of")
    assert result.errors == errors(store)
    # The good half of the broken file is not applied either: whole file or nothing.
    assert store.get(key("a1")).generation == 1  # type: ignore[union-attr]


def test_a_file_that_becomes_invalid_does_not_apply_its_valid_edits(
    sync: ManifestSync, store: Store
) -> None:
    sync.apply(snapshot({"a.yaml": docs("a1", "a2")}))
    sync.apply(snapshot({"a.yaml": doc("a1", "1Gi") + "---\n" + doc("a2", "1X")}))
    assert store.get(key("a1")).spec["memory"] == "64Mi"  # type: ignore[union-attr]
    assert "line 13: document 2" in errors(store)["a.yaml"]


def test_fixing_the_file_clears_the_error(
    sync: ManifestSync, store: Store, clock: FakeClock
) -> None:
    sync.apply(snapshot({"a.yaml": doc("a")}))
    sync.apply(snapshot({"a.yaml": doc("a", "64X")}))
    assert "'64X' is not a quantity" in errors(store)["a.yaml"]
    first_seen = store.source_errors()[0].time

    clock.advance(60)
    sync.apply(snapshot({"a.yaml": doc("a", "64X")}))
    assert store.source_errors()[0].time == first_seen  # still the same error

    clock.advance(60)
    result = sync.apply(snapshot({"a.yaml": doc("a", "128Mi")}))
    assert result.changed == [key("a")]
    assert dict(result.errors) == {}
    assert errors(store) == {}
    assert store.get(key("a")).spec["memory"] == "128Mi"  # type: ignore[union-attr]


def manifest_events(store: Store) -> list[tuple[str | None, str, str, str]]:
    return [
        (str(e.key) if e.key else None, e.type, e.reason, e.message)
        for e in store.events()
        if e.reason in ("ManifestInvalid", "ManifestValid")
    ]


def test_a_file_going_invalid_and_valid_again_is_an_event_on_each_of_its_objects(
    sync: ManifestSync, store: Store, clock: FakeClock
) -> None:
    sync.apply(snapshot({"a.yaml": docs("a1", "a2"), "b.yaml": doc("b")}))
    assert manifest_events(store) == []

    sync.apply(snapshot({"a.yaml": docs("a1", "a2") + "  vcpus: [1\n", "b.yaml": doc("b")}))
    message = errors(store)["a.yaml"]
    invalid = f"a.yaml: {message}; keeping the last good spec"
    assert manifest_events(store) == [
        ("Domain/a1", "Warning", "ManifestInvalid", invalid),
        ("Domain/a2", "Warning", "ManifestInvalid", invalid),
    ]
    # The same error seen again (another file changed, a rescan) is no new event.
    clock.advance(5)
    sync.apply(snapshot({"a.yaml": docs("a1", "a2") + "  vcpus: [1\n", "b.yaml": doc("b", "1Gi")}))
    assert len(manifest_events(store)) == 2

    clock.advance(5)
    sync.apply(snapshot({"a.yaml": docs("a1", "a2"), "b.yaml": doc("b", "1Gi")}))
    assert manifest_events(store)[2:] == [
        ("Domain/a1", "Normal", "ManifestValid", "a.yaml is valid again"),
        ("Domain/a2", "Normal", "ManifestValid", "a.yaml is valid again"),
    ]


def test_a_file_in_another_error_is_an_event_again(sync: ManifestSync, store: Store) -> None:
    sync.apply(snapshot({"a.yaml": doc("a")}))
    sync.apply(snapshot({"a.yaml": doc("a", "64X")}))
    sync.apply(snapshot({"a.yaml": doc("a", "64Y")}))
    found = manifest_events(store)
    assert [(k, r) for k, _, r, _ in found] == [("Domain/a", "ManifestInvalid")] * 2
    assert "'64X'" in found[0][3] and "'64Y'" in found[1][3]


def test_a_file_without_objects_going_invalid_is_an_event_of_no_object(
    sync: ManifestSync, store: Store
) -> None:
    sync.apply(snapshot({"new.yaml": doc("n", "64X")}))
    sync.apply(snapshot({"new.yaml": doc("n")}))
    found = manifest_events(store)
    assert [(k, r) for k, _, r, _ in found] == [
        (None, "ManifestInvalid"),
        ("Domain/n", "ManifestValid"),
    ]
    assert found[0][3].startswith("new.yaml: line 6: ")


def test_a_broken_file_that_is_removed_is_not_valid_again(sync: ManifestSync, store: Store) -> None:
    sync.apply(snapshot({"a.yaml": doc("a"), "b.yaml": doc("b"), "c.yaml": doc("c")}))
    sync.apply(snapshot({"a.yaml": doc("a", "64X"), "b.yaml": doc("b"), "c.yaml": doc("c")}))
    sync.apply(snapshot({"b.yaml": doc("b"), "c.yaml": doc("c")}))
    assert [r for _, _, r, _ in manifest_events(store)] == ["ManifestInvalid"]
    assert names(store, deleting=True) == ["a"]


def test_an_incomplete_snapshot_keeps_what_was_known_of_the_files(
    sync: ManifestSync, store: Store
) -> None:
    sync.apply(snapshot({"a.yaml": doc("a"), "b.yaml": doc("b")}))
    sync.apply(snapshot({"a.yaml": doc("a", "64X"), "b.yaml": doc("b")}))
    sync.apply(snapshot({}, complete=False, error="No such file or directory"))
    assert set(errors(store)) == {"a.yaml", GUARD_SOURCE}
    # Back as it was: the file is still broken, and no event says otherwise.
    sync.apply(snapshot({"a.yaml": doc("a", "64X"), "b.yaml": doc("b")}))
    assert set(errors(store)) == {"a.yaml"}
    assert [r for _, _, r, _ in manifest_events(store)] == ["ManifestInvalid"]


def test_a_file_still_broken_when_the_service_starts_is_logged_once_without_a_new_event(
    store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    ManifestSync(store, clock).apply(snapshot({"a.yaml": doc("a")}))
    ManifestSync(store, clock).apply(snapshot({"a.yaml": doc("a", "64X")}))
    restarted = ManifestSync(store, clock)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        restarted.apply(snapshot({"a.yaml": doc("a", "64X")}))
        restarted.apply(snapshot({"a.yaml": doc("a", "64X"), "b.yaml": doc("b")}))
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("a.yaml: still invalid: line 6: ")
    assert [r for _, _, r, _ in manifest_events(store)] == ["ManifestInvalid"]


def test_invalid_yaml_error_is_recorded_with_its_line(sync: ManifestSync, store: Store) -> None:
    sync.apply(snapshot({"a.yaml": doc("a")}))
    sync.apply(snapshot({"a.yaml": doc("a") + "  vcpus: [1\n"}))
    assert errors(store)["a.yaml"].startswith("line 7: invalid YAML")  # where the `[` is
    assert names(store, deleting=False) == ["a"]


def test_a_file_that_was_never_valid_is_reported_and_applies_nothing(
    sync: ManifestSync, store: Store
) -> None:
    result = sync.apply(snapshot({"a.yaml": doc("a"), "b.yaml": b"\xff\xfe"}))
    assert result.changed == [key("a")]
    assert "not UTF-8" in errors(store)["b.yaml"]


def test_unreadable_or_too_large_file_keeps_the_last_good_state(
    sync: ManifestSync, store: Store
) -> None:
    sync.apply(snapshot({"a.yaml": docs("a1", "a2"), "b.yaml": doc("b")}))
    reason = "larger than 1048576 bytes"
    result = sync.apply(snapshot({"a.yaml": b"", "b.yaml": doc("b")}, errors={"a.yaml": reason}))
    assert (result.changed, result.deleting) == ([], [])
    assert names(store, deleting=False) == ["a1", "a2", "b"]
    assert errors(store) == {"a.yaml": reason}

    # Readable again, and one document dropped meanwhile: now that is a deletion.
    result = sync.apply(snapshot({"a.yaml": doc("a1"), "b.yaml": doc("b")}))
    assert result.deleting == [key("a2")]
    assert errors(store) == {}


# -- moves and duplicates --------------------------------------------------------------------


def test_an_object_moved_between_files_in_one_pass_is_not_deleted(
    sync: ManifestSync, store: Store
) -> None:
    sync.apply(snapshot({"a.yaml": docs("x", "y"), "b.yaml": doc("z")}))
    result = sync.apply(snapshot({"a.yaml": doc("y"), "b.yaml": docs("z", "x")}))
    assert result.deleting == []
    assert result.changed == [key("x")]
    obj = store.get(key("x"))
    assert obj is not None
    assert (obj.source, obj.deleting, obj.generation) == ("b.yaml", False, 1)
    assert names(store, deleting=True) == []


def test_an_object_moved_to_a_new_file_while_the_old_file_is_removed(
    sync: ManifestSync, store: Store
) -> None:
    sync.apply(snapshot({"old.yaml": doc("x")}))
    result = sync.apply(snapshot({"new.yaml": doc("x")}))
    assert (result.changed, result.deleting) == ([key("x")], [])
    assert store.get(key("x")).source == "new.yaml"  # type: ignore[union-attr]


def test_the_same_object_in_two_files_the_first_wins(sync: ManifestSync, store: Store) -> None:
    result = sync.apply(
        snapshot({"a.yaml": doc("x"), "b.yaml": doc("y") + "---\n" + doc("x", "1Gi")})
    )
    assert result.changed == [key("x")]
    obj = store.get(key("x"))
    assert obj is not None
    assert (obj.source, obj.spec["memory"]) == ("a.yaml", "64Mi")
    # The later file is in error as a whole: its other object is not applied either.
    assert store.get(key("y")) is None
    assert errors(store) == {"b.yaml": "document 2: Domain/x is already defined in a.yaml"}


def test_a_copy_of_an_object_in_a_new_file_does_not_take_it_over(
    sync: ManifestSync, store: Store
) -> None:
    sync.apply(snapshot({"b.yaml": doc("x")}))
    # a-copy.yaml sorts first, but b.yaml already had the object: b.yaml keeps it.
    sync.apply(snapshot({"a-copy.yaml": doc("x", memory="1Gi"), "b.yaml": doc("x")}))
    obj = store.get(key("x"))
    assert obj is not None
    assert (obj.source, obj.spec["memory"], obj.generation) == ("b.yaml", "64Mi", 1)
    assert errors(store) == {"a-copy.yaml": "document 1: Domain/x is already defined in b.yaml"}


# -- deletion, and the guards around it ------------------------------------------------------


def test_removing_a_file_marks_its_objects_deleting(sync: ManifestSync, store: Store) -> None:
    sync.apply(snapshot({"a.yaml": doc("a"), "b.yaml": doc("b"), "c.yaml": doc("c")}))
    result = sync.apply(snapshot({"a.yaml": doc("a"), "c.yaml": doc("c")}))
    assert result.deleting == [key("b")]
    assert names(store, deleting=True) == ["b"]
    [event] = store.events(key("b"))
    assert (event.reason, event.type) == ("ManifestRemoved", "Normal")
    # Seen again: no second deletion, no second event.
    again = sync.apply(snapshot({"a.yaml": doc("a"), "c.yaml": doc("c")}))
    assert again.deleting == []
    assert len(store.events(key("b"))) == 1


def test_a_file_restored_before_deletion_finished_undoes_it(
    sync: ManifestSync, store: Store
) -> None:
    sync.apply(snapshot({"a.yaml": doc("a"), "b.yaml": doc("b"), "c.yaml": doc("c")}))
    sync.apply(snapshot({"a.yaml": doc("a"), "c.yaml": doc("c")}))
    result = sync.apply(snapshot({"a.yaml": doc("a"), "b.yaml": doc("b"), "c.yaml": doc("c")}))
    assert result.changed == [key("b")]
    assert names(store, deleting=True) == []


def test_an_incomplete_snapshot_deletes_nothing_and_reports(
    sync: ManifestSync, store: Store
) -> None:
    sync.apply(snapshot({"a.yaml": docs("a1", "a2"), "b.yaml": doc("b")}))
    result = sync.apply(snapshot({}, complete=False, error="No such file or directory"))
    assert (result.changed, result.deleting) == ([], [])
    assert names(store, deleting=False) == ["a1", "a2", "b"]
    assert list(errors(store)) == [GUARD_SOURCE]
    assert "No such file or directory" in errors(store)[GUARD_SOURCE]
    assert result.errors == errors(store)

    # Back, complete and unchanged: the report clears and nothing is deleted.
    result = sync.apply(snapshot({"a.yaml": docs("a1", "a2"), "b.yaml": doc("b")}))
    assert (result.changed, result.deleting) == ([], [])
    assert errors(store) == {}


@pytest.fixture
def four(sync: ManifestSync) -> dict[str, str]:
    files = {f"{n}.yaml": doc(n) for n in ("a", "b", "c", "d")}
    sync.apply(snapshot(files))
    return files


def test_mass_deletion_is_refused(sync: ManifestSync, store: Store, four: dict[str, str]) -> None:
    result = sync.apply(snapshot({"a.yaml": four["a.yaml"]}))
    assert result.deleting == []
    assert result.refused == 3
    assert names(store, deleting=True) == []
    message = errors(store)[GUARD_SOURCE]
    assert "refusing to delete 3 of 4 managed objects" in message
    assert "Domain/b, Domain/c, Domain/d" in message
    assert "--allow-mass-delete" in message
    assert not store.events(key("b"))


def test_mass_deletion_guard_still_applies_other_changes(
    sync: ManifestSync, store: Store, four: dict[str, str]
) -> None:
    result = sync.apply(snapshot({"a.yaml": doc("a", "1Gi")}))
    assert result.changed == [key("a")]
    assert result.refused == 3
    assert store.get(key("a")).generation == 2  # type: ignore[union-attr]


def test_an_emptied_directory_is_refused(
    sync: ManifestSync, store: Store, four: dict[str, str]
) -> None:
    result = sync.apply(snapshot({}))
    assert (result.deleting, result.refused) == ([], 4)
    assert "refusing to delete 4 of 4" in errors(store)[GUARD_SOURCE]


def test_removing_one_of_four_works(sync: ManifestSync, store: Store, four: dict[str, str]) -> None:
    result = sync.apply(snapshot({k: v for k, v in four.items() if k != "d.yaml"}))
    assert result.deleting == [key("d")]
    assert result.refused == 0
    assert GUARD_SOURCE not in errors(store)


def test_removing_two_of_four_is_not_most_of_them(
    sync: ManifestSync, store: Store, four: dict[str, str]
) -> None:
    result = sync.apply(snapshot({"a.yaml": four["a.yaml"], "b.yaml": four["b.yaml"]}))
    assert result.deleting == [key("c"), key("d")]
    assert result.refused == 0


def test_deleting_in_small_steps_gets_past_the_guard(
    sync: ManifestSync, store: Store, four: dict[str, str]
) -> None:
    sync.apply(snapshot({"a.yaml": four["a.yaml"]}))  # refused
    sync.apply(snapshot({"a.yaml": four["a.yaml"], "b.yaml": four["b.yaml"]}))
    assert names(store, deleting=True) == ["c", "d"]
    assert GUARD_SOURCE not in errors(store)


def test_removing_the_only_object_works(sync: ManifestSync, store: Store) -> None:
    sync.apply(snapshot({"a.yaml": doc("a")}))
    result = sync.apply(snapshot({}))
    assert (result.deleting, result.refused) == ([key("a")], 0)
    assert errors(store) == {}


def test_allow_mass_delete_lets_it_through(
    store: Store, clock: FakeClock, four: dict[str, str]
) -> None:
    permissive = ManifestSync(store, clock, allow_mass_delete=True)
    result = permissive.apply(snapshot({}))
    assert result.deleting == [key("a"), key("b"), key("c"), key("d")]
    assert result.refused == 0
    assert errors(store) == {}


def test_objects_of_files_in_error_do_not_count_as_deletions(
    sync: ManifestSync, store: Store, four: dict[str, str]
) -> None:
    # Three files broken at once is not three deletions: nothing trips the guard.
    broken = {k: v + "  bogus: 1\n" for k, v in four.items() if k != "a.yaml"}
    result = sync.apply(snapshot({"a.yaml": four["a.yaml"], **broken}))
    assert (result.deleting, result.refused) == ([], 0)
    assert set(errors(store)) == {"b.yaml", "c.yaml", "d.yaml"}


# -- an operator's approval of one mass deletion (kvmrec prune) ------------------------------


def approve(store: Store, clock: FakeClock, *names: str, minutes: float = 10) -> None:
    expires = clock.wall() + timedelta(minutes=minutes)
    store.approve_deletions(DeletionApproval(tuple(key(n) for n in names), expires))


def test_an_approved_mass_deletion_goes_through_once(
    sync: ManifestSync, store: Store, clock: FakeClock, four: dict[str, str]
) -> None:
    refused = sync.compute(snapshot({"a.yaml": four["a.yaml"]}), store.list())
    assert refused.held_back == [key("b"), key("c"), key("d")]
    approve(store, clock, "d", "c", "b")  # any order: the set is what is approved
    result = sync.apply(snapshot({"a.yaml": four["a.yaml"]}))
    assert (sorted(result.deleting), result.refused) == ([key("b"), key("c"), key("d")], 0)
    assert GUARD_SOURCE not in errors(store)
    assert store.deletion_approval() is None  # used up
    assert "approved with kvmrec prune" in store.events(key("b"))[-1].message


def test_an_approval_covers_only_its_own_set(
    sync: ManifestSync, store: Store, clock: FakeClock, four: dict[str, str]
) -> None:
    approve(store, clock, "b", "c")
    result = sync.apply(snapshot({"a.yaml": four["a.yaml"]}))  # b, c and d
    assert (result.deleting, result.refused) == ([], 3)
    assert store.deletion_approval() is not None  # not consumed by another set
    assert "kvmrec prune" in errors(store)[GUARD_SOURCE]


def test_an_expired_approval_covers_nothing(
    sync: ManifestSync, store: Store, clock: FakeClock, four: dict[str, str]
) -> None:
    approve(store, clock, "b", "c", "d", minutes=1)
    clock.advance(61)
    result = sync.apply(snapshot({"a.yaml": four["a.yaml"]}))
    assert (result.deleting, result.refused) == ([], 3)
