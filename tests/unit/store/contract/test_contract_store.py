"""Store contract: several clients, threads, the change counter, read-only clients."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from store_contract import KEY, SPEC, Opener, at, manifest

from kvmrec.api.kinds import ObjectKey
from kvmrec.store.base import Store, StoreError
from kvmrec.store.records import DeletionApproval, ReconcileRecord, SnapshotRecord, Status


def test_the_change_counter_moves_when_another_connection_writes(
    store: Store, opener: Opener
) -> None:
    reader = opener(read_only=True)
    try:
        # Reading it changes nothing. (On etcd it is the cluster's revision: another
        # test's write may move it between two reads, but not between every two.)
        pairs = [(reader.change_counter(), reader.change_counter()) for _ in range(5)]
        assert any(first == second for first, second in pairs), pairs
        before = reader.change_counter()
        store.add_event(KEY, "Normal", "Started", "", at(0))
        after = reader.change_counter()
        assert after != before
        store.record(KEY, Status(observed_generation=1), (), datetime.now(UTC))
        assert reader.change_counter() != after
    finally:
        reader.close()


def test_concurrent_writers_lose_nothing(store: Store) -> None:
    threads, per_thread = 8, 15
    barrier = threading.Barrier(threads)
    failures: list[BaseException] = []

    def work(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                key = ObjectKey("Domain", f"t{t}-o{i}")
                store.apply(manifest(key.name, spec=SPEC | {"vcpus": t + 1}), at(i))
                store.record(key, Status(observed_generation=1, retries=i), (), datetime.now(UTC))
                store.add_event(key, "Normal", "Created", f"{t}/{i}", at(i))
                # And a shared object everybody updates.
                shared_spec = SPEC | {"vcpus": t * per_thread + i + 1}
                store.apply(manifest("shared", spec=shared_spec), at(i))
                store.add_event(KEY, "Normal", "Touched", f"{t}/{i}", at(i))
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=30)
    assert not failures, failures
    assert not any(w.is_alive() for w in workers)

    names = {o.key.name for o in store.list()}
    assert len(names) == threads * per_thread + 1
    stored_keys = store.keys()
    assert {k.name for k in stored_keys} == names
    statuses = store.statuses()
    assert len(statuses) == threads * per_thread
    for t in range(threads):
        for i in range(per_thread):
            key = ObjectKey("Domain", f"t{t}-o{i}")
            assert statuses[key].retries == i
            assert store.get(key).spec["vcpus"] == t + 1  # type: ignore[union-attr]
    assert len(store.events(limit=10_000)) == 2 * threads * per_thread
    assert len(store.events(KEY, limit=10_000)) == threads * per_thread
    # Every update of the shared object was a new spec: one generation and revision each.
    shared = ObjectKey("Domain", "shared")
    total = threads * per_thread
    assert store.get(shared).generation == total  # type: ignore[union-attr]
    assert [r.generation for r in store.revisions(shared)] == list(range(1, total + 1))


def test_a_second_client_sees_what_the_first_wrote(store: Store, opener: Opener) -> None:
    store.apply(manifest(), at(0))
    store.record(KEY, Status(observed_generation=1), (), datetime.now(UTC))
    other = opener()
    try:
        assert [o.key for o in other.list()] == [KEY]
        assert other.get_status(KEY) == Status(observed_generation=1)
    finally:
        other.close()


def test_a_reader_refuses_every_write(store: Store, opener: Opener) -> None:
    store.apply(manifest(), at(0))
    reader = opener(read_only=True)
    writes = [
        lambda: reader.apply(manifest("new"), at(1)),
        lambda: reader.apply_many([manifest("new")], at(1)),
        lambda: reader.mark_deleting(KEY, at(1)),
        lambda: reader.remove(KEY),
        lambda: reader.record(KEY, Status(), (), datetime.now(UTC)),
        lambda: reader.record(KEY, Status(), [], at(1)),
        lambda: reader.add_event(KEY, "Normal", "X", "", at(1)),
        lambda: reader.record_reconcile(ReconcileRecord(KEY, at(1), 0.0, "ok")),
        lambda: reader.prune_history(at(1)),
        lambda: reader.record_snapshot(SnapshotRecord("a", "s", None, at(1), False, False)),
        lambda: reader.forget_snapshot("a", "s"),
        lambda: reader.set_source_errors({"x.yaml": "bad"}, at(1)),
        lambda: reader.approve_deletions(DeletionApproval((KEY,), at(9))),
        lambda: reader.consume_deletion_approval("x"),
    ]
    try:
        for write in writes:
            with pytest.raises(StoreError, match="read-only"):
                write()
        assert [o.key for o in reader.list()] == [KEY]  # reading is fine
        assert reader.get(KEY) == store.get(KEY)
    finally:
        reader.close()
    assert store.get(KEY) is not None and store.events() == []
