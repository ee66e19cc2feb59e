"""What the etcd store promises beyond the contract: no lost update between clients, a
fenced host's writes refused, no write when nothing changed, events that expire, a
migration request's cancel kept, a relocation written whole or not at all.

These use the stack's etcd (``support.etcd``), each test under a prefix of its own that is
deleted afterwards.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kvmrec.api.kinds import Manifest, ObjectKey
from kvmrec.fleet import requests
from kvmrec.store.base import StatusConflict
from kvmrec.store.etcd import EtcdStore, Fenced
from kvmrec.store.etcd.fleet import _FleetView
from kvmrec.store.etcd.gateway import Gateway, compare, parse_endpoints
from kvmrec.store.etcd.migrations import EtcdMigrations
from kvmrec.store.fleet_records import Migration
from kvmrec.store.records import ReconcileRecord, Status
from support import etcd

pytestmark = pytest.mark.integration

KEY = ObjectKey("Domain", "web")
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
_WRITES = {"/v3/kv/put", "/v3/kv/deleterange", "/v3/lease/grant"}


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def manifest(name: str = "web", vcpus: int = 1, **kwargs: Any) -> Manifest:
    return Manifest("Domain", name, {"memory": "64Mi", "vcpus": vcpus}, f"{name}.yaml", 1, **kwargs)


@pytest.fixture
def where(request: pytest.FixtureRequest) -> tuple[str, str]:
    return etcd.private_prefix(request.addfinalizer)


@pytest.fixture
def prefix(where: tuple[str, str]) -> str:
    return where[1]


@pytest.fixture
def gateway(where: tuple[str, str]) -> Iterator[Gateway]:
    gw = Gateway(parse_endpoints(where[0]))
    yield gw
    gw.close()


@pytest.fixture
def opener(where: tuple[str, str]) -> Iterator[Callable[..., EtcdStore]]:
    opened: list[EtcdStore] = []
    endpoints, prefix = where

    def open_(**kwargs: Any) -> EtcdStore:
        store = EtcdStore(endpoints, prefix=prefix, **kwargs)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


def count_writes(store: EtcdStore) -> list[str]:
    """The requests ``store`` sends from now on that may write (puts, deletes, leases, and
    transactions with a put or a delete in them)."""
    writes: list[str] = []
    gateway = store._etcd.gateway
    send = gateway.post

    def post(path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        ops = [*body.get("success", ()), *body.get("failure", ())] if path == "/v3/kv/txn" else []
        if path in _WRITES or any("request_range" not in op for op in ops):
            writes.append(path)
        return send(path, body)

    gateway.post = post  # type: ignore[method-assign]
    return writes


def newest_write(gateway: Gateway, prefix: str) -> int:
    """The highest mod revision of any key under ``prefix``."""
    kvs = gateway.range(f"{prefix}/".encode(), prefix=True, keys_only=True).kvs
    return max((kv.mod_revision for kv in kvs), default=0)


def test_racing_clients_lose_no_update(opener: Callable[..., EtcdStore]) -> None:
    """Two publishers applying new specs to one object and a host writing its status,
    each its own client: every generation gets its revision, and the host's last status
    is the one stored."""
    publishers, host = [opener(), opener()], opener(host="h1")
    publishers[0].apply(manifest(), at(0))
    rounds = 30
    failures: list[BaseException] = []
    written: list[int] = []

    def publish(n: int) -> None:
        try:
            for i in range(rounds):
                publishers[n].apply(manifest(vcpus=100 * n + i + 2), at(i))
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    def report() -> None:
        try:
            for i in range(rounds):
                obj, _ = host.get_with_status(KEY)
                assert obj is not None
                host.record(KEY, Status(observed_generation=obj.generation, retries=i), [], at(i))
                written.append(i)
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    workers = [threading.Thread(target=publish, args=(n,)) for n in (0, 1)]
    workers.append(threading.Thread(target=report))
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert not failures, failures
    reader = opener(read_only=True)
    assert reader.get(KEY).generation == 2 * rounds + 1  # type: ignore[union-attr]
    revisions = reader.revisions(KEY)
    assert [r.generation for r in revisions] == list(range(1, 2 * rounds + 2))
    assert len({r.digest for r in revisions}) == 2 * rounds + 1
    assert reader.host_statuses(KEY)[0][2].retries == written[-1] == rounds - 1


def test_a_status_written_meanwhile_by_another_client_is_not_overwritten(
    opener: Callable[..., EtcdStore],
) -> None:
    first, second = opener(host="h1"), opener(host="h1")
    first.record(KEY, Status(observed_generation=1), (), datetime.now(UTC))
    first.get_with_status(KEY)
    second.get_with_status(KEY)
    second.record(KEY, Status(observed_generation=2), [("Normal", "Second", "")], at(1))
    with pytest.raises(StatusConflict, match="another client"):
        first.record(KEY, Status(observed_generation=3), [("Normal", "First", "")], at(1))
    assert second.get_status(KEY) == Status(observed_generation=2)
    # What the refused reconcile did is still told; only its status is not written.
    assert [e.reason for e in second.events(KEY)] == ["Second", "First"]
    # The reconcile is retried: it reads again and then writes.
    first.get_with_status(KEY)
    first.record(KEY, Status(observed_generation=3), [], at(2))
    assert second.get_status(KEY) == Status(observed_generation=3)


class LeaseFence:
    """A host's registration key, held by its lease."""

    def __init__(self, key: bytes, lease: int) -> None:
        self.key, self.lease = key, lease

    def guards(self) -> Sequence[Mapping[str, Any]]:
        return [compare(self.key, "LEASE", self.lease)]


def test_a_fenced_write_is_refused_and_not_retried(
    opener: Callable[..., EtcdStore], gateway: Gateway, prefix: str
) -> None:
    registration = f"{prefix}/hosts/h1".encode()
    lease = gateway.grant(30)
    gateway.put(registration, b"h1", lease)
    fenced = opener(host="h1", fence=LeaseFence(registration, lease))
    fenced.apply(manifest(), at(0))
    fenced.record(KEY, Status(observed_generation=1), [("Normal", "Started", "")], at(0))

    gateway.revoke(lease)  # the host is cut off: its registration is gone
    writes = count_writes(fenced)
    with pytest.raises(Fenced, match="lease is lost"):
        fenced.apply(manifest(vcpus=2), at(1))
    with pytest.raises(Fenced):
        fenced.record(KEY, Status(observed_generation=2), [("Normal", "Late", "")], at(1))
    with pytest.raises(Fenced):
        fenced.mark_deleting(KEY, at(1))
    assert writes == ["/v3/kv/txn"] * 3  # one try each, never retried

    other = opener(read_only=True)
    assert other.get(KEY).generation == 1  # type: ignore[union-attr]
    assert other.host_statuses(KEY) == [(KEY, "h1", Status(observed_generation=1))]
    assert [e.reason for e in other.events(KEY)] == ["Started"]


def test_nothing_changed_writes_nothing(
    opener: Callable[..., EtcdStore], gateway: Gateway, prefix: str
) -> None:
    store = opener(host="h1")
    many = [manifest(f"d{i}") for i in range(10)]
    store.apply_many(many, at(0))
    store.set_source_errors({"bad.yaml": "line 1: no"}, at(0))
    status = Status(observed_generation=1, last_reconcile_time=at(0))
    store.record(KEY, status, [("Normal", "Started", "")], at(0))

    before = newest_write(gateway, prefix)
    writes = count_writes(store)
    assert store.apply(many[0], at(1)).changed is False
    assert not any(r.changed for r in store.apply_many(many, at(1)).values())
    store.set_source_errors({"bad.yaml": "line 1: no"}, at(1))
    for minute in (1, 2, 3):  # the reconciles of an object at rest
        store.get_with_status(KEY)
        done = ReconcileRecord(KEY, at(minute), 0.01, "ok")
        store.record(
            KEY, replace(status, last_reconcile_time=at(minute)), [], at(minute), reconcile=done
        )
    assert writes == []
    assert newest_write(gateway, prefix) == before

    # Three objects changed among ten: at most one transaction each (here one for all).
    changed = [manifest(f"d{i}", vcpus=2) if i < 3 else m for i, m in enumerate(many)]
    results = store.apply_many(changed, at(4))
    assert [k.name for k, r in sorted(results.items()) if r.changed] == ["d0", "d1", "d2"]
    assert 1 <= len(writes) <= 3


def test_each_host_has_its_own_status_and_an_operator_reads_the_newest(
    opener: Callable[..., EtcdStore],
) -> None:
    one, two, operator = opener(host="h1"), opener(host="h2"), opener(read_only=True)
    one.record(KEY, Status(observed_generation=1, retries=1), (), datetime.now(UTC))
    two.record(KEY, Status(observed_generation=1, retries=2), (), datetime.now(UTC))
    assert one.get_status(KEY) == Status(observed_generation=1, retries=1)
    assert two.get_with_status(KEY) == (None, Status(observed_generation=1, retries=2))
    assert operator.get_status(KEY) == Status(observed_generation=1, retries=2)  # newest
    assert operator.statuses() == {KEY: Status(observed_generation=1, retries=2)}
    assert [(host, s.retries) for _, host, s in operator.host_statuses(KEY)] == [
        ("h1", 1),
        ("h2", 2),
    ]
    one.record(KEY, Status(observed_generation=1, retries=3), (), datetime.now(UTC))
    assert operator.get_status(KEY) == Status(observed_generation=1, retries=3)
    assert one.statuses() == {KEY: Status(observed_generation=1, retries=3)}
    assert two.statuses() == {KEY: Status(observed_generation=1, retries=2)}


def test_events_expire_with_their_lease(opener: Callable[..., EtcdStore]) -> None:
    store = opener(event_ttl=2)
    store.record(KEY, Status(observed_generation=1), [("Normal", "Started", "")], at(0))
    store.add_event(None, "Warning", "Guard", "held back", at(0))
    assert [e.reason for e in store.events()] == ["Started", "Guard"]
    deadline = time.monotonic() + 30
    while store.events() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert store.events() == []
    assert store.get_status(KEY) == Status(observed_generation=1)  # a status stays
    # A new event after the lease expired goes on a new one.
    store.add_event(KEY, "Normal", "Again", "", at(1))
    assert [e.reason for e in store.events()] == ["Again"]


def test_an_event_lease_revoked_under_the_store_is_replaced(
    opener: Callable[..., EtcdStore], gateway: Gateway
) -> None:
    store = opener()
    store.add_event(KEY, "Normal", "First", "", at(0))
    gateway.revoke(store._event_lease.current())  # e.g. expired while etcd was away
    store.record(KEY, Status(), [("Normal", "Second", "")], at(1))
    assert [e.reason for e in store.events()] == ["Second"]


def test_apply_many_writes_in_batches_and_redoes_a_batch_another_writer_beat(
    opener: Callable[..., EtcdStore],
) -> None:
    store, other = opener(), opener()
    many = [manifest(f"d{i:03d}") for i in range(120)]
    writes = count_writes(store)
    results = store.apply_many(many, at(0))
    assert all(r.created for r in results.values()) and len(results) == 120
    assert len(writes) == 3  # 120 objects, 50 a transaction
    assert [r.generation for r in store.revisions(ObjectKey("Domain", "d119"))] == [1]

    # Another client changes d000 between this client's read and its write.
    gateway = store._etcd.gateway
    send = gateway.post
    raced: list[bool] = []

    def post(path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        if path == "/v3/kv/txn" and body.get("compare") and not raced:
            raced.append(True)
            other.apply(manifest("d000", vcpus=7), at(1))
        return send(path, body)

    gateway.post = post  # type: ignore[method-assign]
    changed = [manifest(m.name, vcpus=2) for m in many[:3]]
    results = store.apply_many(changed, at(2))
    assert raced
    assert {k.name: r.generation for k, r in results.items()} == {"d000": 3, "d001": 2, "d002": 2}
    assert [
        (r.generation, r.spec["vcpus"]) for r in store.revisions(ObjectKey("Domain", "d000"))
    ] == [
        (1, 1),
        (2, 7),
        (3, 2),
    ]


def test_events_of_one_record_share_a_seq_and_are_never_split(
    opener: Callable[..., EtcdStore],
) -> None:
    store = opener()
    store.add_event(KEY, "Normal", "Before", "", at(0))
    cursor = store.events()[-1].seq
    store.record(KEY, Status(), [("Normal", f"R{i}", "") for i in range(3)], at(1))
    store.add_event(KEY, "Normal", "After", "", at(2))
    events = store.events(after=cursor)
    assert [e.reason for e in events] == ["R0", "R1", "R2", "After"]
    assert len({e.seq for e in events[:3]}) == 1 and events[3].seq > events[0].seq > cursor
    # A limit that would cut the three apart returns all three.
    assert [e.reason for e in store.events(after=cursor, limit=2)] == ["R0", "R1", "R2"]
    assert [e.reason for e in store.events(after=events[0].seq)] == ["After"]


def test_a_migration_request_holds_an_operators_cancel(gateway: Gateway, prefix: str) -> None:
    migrations = EtcdMigrations(gateway, prefix)
    placement = gateway.put(f"{prefix}/placements/Domain/web".encode(), b'{"host": "lab1"}')
    asked = Migration(KEY, "lab1", "lab2", T0)
    assert migrations.request(asked, placement)
    done = requests.cancel(migrations, KEY)  # still Pending: ends at once
    assert done.state == "Cancelled" and not done.cancel
    assert migrations.migration(KEY) == done

    assert migrations.request(replace(asked, revision=done.revision), placement)
    found, seen = migrations.migrations()
    assert migrations.start(found[KEY], seen)
    marked = requests.cancel(migrations, KEY)  # Running: marked for the source host
    assert (marked.state, marked.cancel) == ("Running", True)
    assert migrations.migration(KEY) == marked  # as written, read back


def test_a_relocation_is_one_transaction_or_nothing(
    opener: Callable[..., EtcdStore], gateway: Gateway, prefix: str
) -> None:
    store = opener()
    view = _FleetView(store)
    store.apply(manifest(), at(0))
    gateway.put(f"{prefix}/hosts/h2".encode(), b"{}")
    placed = gateway.put(f"{prefix}/placements/Domain/web".encode(), b'{"host": "h1"}')
    store.scoped("h1").record(KEY, Status(observed_generation=1), (), at(0))
    relocated = Status(details={"relocations": 1})
    writes = count_writes(store)
    event = ("Normal", "Relocated", "h1 lost: relocated to h2")

    # The placement moved meanwhile (a migration): nothing is written.
    assert not view.relocate(KEY, ("h1", "h2", "why", placed - 1), relocated, event, at(1))
    assert view.host_statuses(KEY) == [(KEY, "h1", Status(observed_generation=1))]
    assert not [e for e in store.events(KEY) if e.reason == "Relocated"]

    assert view.relocate(KEY, ("h1", "h2", "why", placed), relocated, event, at(1))
    assert json.loads(gateway.get(f"{prefix}/placements/Domain/web".encode()).value)["host"] == "h2"  # type: ignore[union-attr]
    assert view.host_statuses(KEY) == [(KEY, None, relocated)]
    assert [e.reason for e in store.events(KEY)][-1] == "Relocated"
    assert len([w for w in writes if w == "/v3/kv/txn"]) == 2  # the refused one, then one
