"""Store contract: manifest files in error, and the approval of a mass deletion."""

from __future__ import annotations

from store_contract import at

from kvmrec.api.kinds import ObjectKey
from kvmrec.store.base import Store
from kvmrec.store.records import DeletionApproval


def test_set_source_errors_replace_clear_and_keep_time_of_unchanged(store: Store) -> None:
    store.set_source_errors({"a.yaml": "line 3: bad", "b.yaml": "line 1: worse"}, at(0))
    assert [(e.source, e.message, e.time) for e in store.source_errors()] == [
        ("a.yaml", "line 3: bad", at(0)),
        ("b.yaml", "line 1: worse", at(0)),
    ]

    # The same mapping again: nothing moves.
    store.set_source_errors({"b.yaml": "line 1: worse", "a.yaml": "line 3: bad"}, at(1))
    assert [e.time for e in store.source_errors()] == [at(0), at(0)]

    # Replaced: a.yaml unchanged keeps its time, b.yaml is gone, c.yaml is new, and a
    # changed message is a new error with a new time.
    store.set_source_errors({"a.yaml": "line 3: bad", "c.yaml": "line 2: new"}, at(2))
    assert [(e.source, e.time) for e in store.source_errors()] == [
        ("a.yaml", at(0)),
        ("c.yaml", at(2)),
    ]
    store.set_source_errors({"a.yaml": "line 4: different", "c.yaml": "line 2: new"}, at(3))
    assert [(e.source, e.message, e.time) for e in store.source_errors()] == [
        ("a.yaml", "line 4: different", at(3)),
        ("c.yaml", "line 2: new", at(2)),
    ]

    store.set_source_errors({}, at(4))
    assert store.source_errors() == []


def test_an_approval_replaces_the_last_and_is_consumed_once(store: Store) -> None:
    assert store.deletion_approval() is None
    assert store.consume_deletion_approval("anything") is False
    first = DeletionApproval((ObjectKey("Domain", "a"),), at(10))
    second = DeletionApproval((ObjectKey("Domain", "b"), ObjectKey("Network", "n")), at(20))
    store.approve_deletions(first)
    store.approve_deletions(second)
    assert store.deletion_approval() == second
    assert store.consume_deletion_approval(first.digest) is False  # not the pending one
    assert store.deletion_approval() == second
    assert store.consume_deletion_approval(second.digest) is True
    assert store.deletion_approval() is None
    assert store.consume_deletion_approval(second.digest) is False
