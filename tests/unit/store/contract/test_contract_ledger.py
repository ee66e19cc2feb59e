"""Store contract: the snapshot ledger."""

from __future__ import annotations

from store_contract import at

from kvmrec.store.base import Store
from kvmrec.store.records import SnapshotRecord


def snap(domain: str, name: str, policy: str | None, minutes: float) -> SnapshotRecord:
    return SnapshotRecord(domain, name, policy, at(minutes), quiesced=True, memory=False)


def test_snapshots_are_newest_first_and_filtered(store: Store) -> None:
    a1, a2 = snap("a", "nightly-1", "nightly", 1), snap("a", "nightly-2", "nightly", 2)
    b1 = snap("b", "nightly-1", "nightly", 3)
    hand = SnapshotRecord("a", "before-upgrade", None, at(4), quiesced=False, memory=True)
    for record in (a1, b1, a2, hand):
        store.record_snapshot(record)
    assert store.snapshots() == [hand, b1, a2, a1]
    assert store.snapshots(policy="nightly") == [b1, a2, a1]
    assert store.snapshots(domain="a") == [hand, a2, a1]
    assert store.snapshots(policy="nightly", domain="b") == [b1]
    assert store.snapshots(policy="weekly") == []


def test_a_snapshot_of_the_same_name_replaces_and_forget_removes(store: Store) -> None:
    store.record_snapshot(snap("a", "s", "nightly", 1))
    again = SnapshotRecord("a", "s", None, at(5), quiesced=False, memory=True)
    store.record_snapshot(again)
    assert store.snapshots() == [again]
    store.record_snapshot(snap("b", "s", None, 2))  # same name, another domain
    store.forget_snapshot("a", "s")
    assert [(r.domain, r.name) for r in store.snapshots()] == [("b", "s")]
    store.forget_snapshot("a", "s")  # twice is harmless
    store.forget_snapshot("nowhere", "s")
    assert len(store.snapshots()) == 1
