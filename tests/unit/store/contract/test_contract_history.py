"""Store contract: the history of reconciles, and pruning."""

from __future__ import annotations

from store_contract import KEY, SPEC, at, manifest

from kvmrec.api.kinds import ObjectKey
from kvmrec.store.base import Store
from kvmrec.store.records import ReconcileRecord


def test_reconciles_are_oldest_first_the_last_limit(store: Store) -> None:
    other = ObjectKey("Network", "net")
    for i in range(5):
        store.record_reconcile(ReconcileRecord(KEY, at(i), 0.1 * i, "ok"))
    store.record_reconcile(ReconcileRecord(KEY, at(5), 0.0, "error", "libvirt went away"))
    store.record_reconcile(ReconcileRecord(other, at(6), 1.5, "permanent", "conflict"))

    mine = store.reconciles(KEY)
    assert [r.time for r in mine] == [at(i) for i in range(6)]
    assert mine[-1] == ReconcileRecord(KEY, at(5), 0.0, "error", "libvirt went away")
    assert [r.time for r in store.reconciles(KEY, limit=2)] == [at(4), at(5)]
    assert store.reconciles(other) == [ReconcileRecord(other, at(6), 1.5, "permanent", "conflict")]
    assert store.reconciles(ObjectKey("Domain", "none")) == []


def test_prune_history_forgets_what_is_older_but_the_newest_revision(store: Store) -> None:
    store.apply(manifest(), at(0))
    store.apply(manifest(spec=SPEC | {"vcpus": 2}), at(10))
    store.apply(manifest("db"), at(0))  # one revision only, old: it stays
    store.add_event(KEY, "Normal", "Old", "", at(1))
    store.add_event(KEY, "Normal", "New", "", at(30))
    store.record_reconcile(ReconcileRecord(KEY, at(1), 0.1, "ok"))
    store.record_reconcile(ReconcileRecord(KEY, at(30), 0.1, "ok"))

    assert store.prune_history(at(20)) == 3  # an event, a reconcile, a revision
    assert [e.reason for e in store.events(KEY)] == ["New"]
    assert [r.time for r in store.reconciles(KEY)] == [at(30)]
    assert [r.generation for r in store.revisions(KEY)] == [2]
    assert [r.generation for r in store.revisions(ObjectKey("Domain", "db"))] == [1]
    assert store.get(KEY).generation == 2  # type: ignore[union-attr]
    assert store.prune_history(at(20)) == 0
