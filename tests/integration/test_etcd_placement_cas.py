"""Placement decisions on the real etcd: each one compare-and-swap, so of two schedulers
racing for one Domain exactly one wins, and no Domain goes to a host that is not live; a
pass's new placements in one transaction, each on its own where the batch lost a race."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from kvmrec import store as stores
from kvmrec.api.objects import ObjectKey
from kvmrec.store.etcd import EtcdStore
from kvmrec.store.etcd.gateway import Gateway
from kvmrec.store.etcd.placements import EtcdPlacements
from kvmrec.store.fleet import Change, Placing

pytestmark = pytest.mark.integration


def test_two_schedulers_racing_for_one_domain_exactly_one_wins(
    etcd_gateway: Gateway, etcd_prefix: str
) -> None:
    for host in ("h1", "h2"):
        etcd_gateway.put(f"{etcd_prefix}/hosts/{host}".encode(), b"{}")
    key = ObjectKey("Domain", "web-1")
    hosts = ("h1", "h2")

    def decide(host: str, name: ObjectKey, start: threading.Barrier, won: dict[str, bool]) -> None:
        gateway = Gateway(etcd_gateway.endpoints)  # a scheduler of its own
        try:
            scheduler = EtcdPlacements(gateway, etcd_prefix)
            start.wait()
            won[host] = scheduler.place(name, host, "fits", None, datetime.now(UTC))
        finally:
            gateway.close()

    for round_ in range(20):
        name = ObjectKey("Domain", f"race-{round_}")
        start = threading.Barrier(2)
        won: dict[str, bool] = {}
        threads = [threading.Thread(target=decide, args=(host, name, start, won)) for host in hosts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(won.values()) == [False, True]
        placed = EtcdPlacements(etcd_gateway, etcd_prefix).placement(name)
        assert placed is not None
        assert won[placed.placement.host]

    placements = EtcdPlacements(etcd_gateway, etcd_prefix)
    now = datetime.now(UTC)
    assert not placements.place(key, "gone", "fits", None, now), "no live host 'gone'"
    assert placements.place(key, "h1", "fits", None, now)
    first = placements.placement(key)
    assert first is not None and first.placement.host == "h1"
    assert not placements.place(key, "h2", "stale read", None, now)
    assert placements.place(key, "h2", "moved", first.revision, now)
    assert not placements.unplace(key, first.revision), "a stale revision"
    second = placements.placement(key)
    assert second is not None and second.placement.reason == "moved"
    assert set(placements.placements("Domain")) >= {key}
    assert placements.unplace(key, second.revision)
    assert placements.placement(key) is None


def test_a_watched_change_names_the_domain_and_its_host(
    etcd_gateway: Gateway, etcd_prefix: str
) -> None:
    etcd_gateway.put(f"{etcd_prefix}/hosts/h1".encode(), b"{}")
    placements = EtcdPlacements(etcd_gateway, etcd_prefix)
    key = ObjectKey("Domain", "web-1")
    assert placements.place(key, "h1", "fits", None, datetime.now(UTC))
    kv = etcd_gateway.get(placements.key(key))
    assert kv is not None
    put = Change("PUT", kv.key.decode(), kv.value, kv.mod_revision)
    assert placements.placement_change(put) == (key, "h1")
    gone = Change("DELETE", kv.key.decode(), b"", kv.mod_revision + 1)
    assert placements.placement_change(gone) == (key, None)
    other = Change("PUT", f"{etcd_prefix}/objects/Domain/web-1", b"{}", 1)
    assert placements.placement_change(other) is None


@pytest.fixture
def with_events(
    etcd_gateway: Gateway, etcd_prefix: str
) -> Iterator[tuple[EtcdStore, EtcdPlacements]]:
    """The store and placements that write an event with each placement; hosts h1 and h2
    live."""
    endpoints = ",".join(f"{h}:{p}" for h, p in etcd_gateway.endpoints)
    store = stores.open(f"etcd://{endpoints}{etcd_prefix}")
    assert isinstance(store, EtcdStore)
    try:
        for host in ("h1", "h2"):
            etcd_gateway.put(f"{etcd_prefix}/hosts/{host}".encode(), b"{}")
        yield store, EtcdPlacements(etcd_gateway, etcd_prefix, events=store.write_with_events_of)
    finally:
        store.close()


def test_a_placement_and_its_event_are_one_transaction(
    etcd_gateway: Gateway, with_events: tuple[EtcdStore, EtcdPlacements]
) -> None:
    store, placements = with_events
    key, now = ObjectKey("Domain", "web-1"), datetime.now(UTC)
    before = etcd_gateway.range(b"\0").revision
    assert placements.place(key, "h1", "fits", None, now, ("Normal", "Scheduled", "on h1"))
    placed = placements.placement(key)
    assert placed is not None and placed.revision == before + 1  # one revision: one txn
    [event] = store.events(key)
    assert (event.reason, event.message) == ("Scheduled", "on h1")
    # A lost compare writes neither.
    assert not placements.place(key, "h1", "again", None, now, ("Normal", "Scheduled", "x"))
    assert [e.message for e in store.events(key)] == ["on h1"]


def test_new_placements_go_together_and_a_lost_race_costs_only_its_own(
    etcd_gateway: Gateway, with_events: tuple[EtcdStore, EtcdPlacements]
) -> None:
    store, placements = with_events
    now = datetime.now(UTC)

    def placing(name: str, host: str) -> Placing:
        key = ObjectKey("Domain", name)
        return Placing(key, host, "fits", ("Normal", "Scheduled", f"{name} on {host}"))

    together = [placing("a", "h1"), placing("b", "h2"), placing("c", "h1")]
    before = etcd_gateway.range(b"\0").revision
    assert placements.place_new(together, now) == [p.key for p in together]
    revisions = {placements.placement(p.key).revision for p in together}  # type: ignore[union-attr]
    assert revisions == {before + 1}  # one transaction for the three
    assert [e.message for e in store.events(ObjectKey("Domain", "b"))] == ["b on h2"]

    # "a" is placed already and "x" names a host that is not live: the others still go.
    mixed = [placing("a", "h2"), placing("d", "h2"), placing("x", "h9"), placing("e", "h1")]
    placed = placements.place_new(mixed, now)
    assert placed == [ObjectKey("Domain", "d"), ObjectKey("Domain", "e")]
    assert placements.placement(ObjectKey("Domain", "a")).placement.host == "h1"  # type: ignore[union-attr]
    assert placements.placement(ObjectKey("Domain", "x")) is None
    assert store.events(ObjectKey("Domain", "x")) == []
