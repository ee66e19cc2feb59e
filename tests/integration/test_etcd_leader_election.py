"""Leader election on the real etcd: one leader of two candidates; when it stops, the other
takes over; a leader cut off from etcd stops leading before the other can start."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from realstack import wait_for

from kvmrec.api.objects import ObjectKey
from kvmrec.store.etcd.election import LeaderElection
from kvmrec.store.etcd.fencing import Fenced
from kvmrec.store.etcd.gateway import Gateway, put_op
from kvmrec.store.etcd.placements import EtcdPlacements
from support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration


class Log:
    """The transitions of every candidate, in the order they happened."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[tuple[str, str]] = []

    def callbacks(self, who: str) -> dict[str, object]:
        return {
            "on_started_leading": lambda: self.add(who, "started"),
            "on_stopped_leading": lambda: self.add(who, "stopped"),
        }

    def add(self, who: str, what: str) -> None:
        with self.lock:
            self.items.append((who, what))


def _leaders(*candidates: LeaderElection) -> list[str]:
    return [c.identity for c in candidates if c.is_leader()]


def test_one_leader_of_two_and_the_other_takes_over_when_it_stops(
    etcd_gateway: Gateway, etcd_prefix: str
) -> None:
    log = Log()
    a = LeaderElection(etcd_gateway, "scheduler", "a", etcd_prefix, **log.callbacks("a"))  # type: ignore[arg-type]
    b = LeaderElection(etcd_gateway, "scheduler", "b", etcd_prefix, **log.callbacks("b"))  # type: ignore[arg-type]
    a.start()
    b.start()
    try:
        first = wait_for(lambda: _leaders(a, b), timeout=10, what="a leader")
        assert len(first) == 1
        leader, other = (a, b) if first == ["a"] else (b, a)
        assert leader.leader() == leader.identity
        assert etcd_gateway.txn(leader.guards(), [put_op(leader.key + b"/w", b"1")]).succeeded
        with pytest.raises(Fenced):
            other.guards()
        # Only the leader places: its decisions carry its leadership in the compare.
        etcd_gateway.put(f"{etcd_prefix}/hosts/h1".encode(), b"{}")
        web = ObjectKey("Domain", "web")
        now = datetime.now(UTC)
        with pytest.raises(Fenced):
            EtcdPlacements(etcd_gateway, etcd_prefix, fence=other).place(web, "h1", "", None, now)
        assert EtcdPlacements(etcd_gateway, etcd_prefix, fence=leader).place(
            web, "h1", "fits", None, now
        )

        leader.stop()  # resigns: the other needs no lease expiry
        wait_for(other.is_leader, timeout=10, what="the other to take over")
        assert other.leader() == other.identity
        assert log.items == [(leader.identity, "started"), (leader.identity, "stopped"),
                             (other.identity, "started")]  # fmt: skip
    finally:
        a.stop()
        b.stop()


def test_a_leader_cut_off_stops_leading_before_another_starts(
    etcd_gateway: Gateway, etcd_prefix: str
) -> None:
    log = Log()
    proxy = TcpProxy(etcd_gateway.endpoints[0])
    a = LeaderElection(
        Gateway([proxy.endpoint], timeout=1),
        "scheduler",
        "a",
        etcd_prefix,
        **log.callbacks("a"),  # type: ignore[arg-type]
    )
    b = LeaderElection(etcd_gateway, "scheduler", "b", etcd_prefix, **log.callbacks("b"))  # type: ignore[arg-type]
    a.start()
    try:
        wait_for(a.is_leader, timeout=10, what="a leading")
        b.start()
        proxy.cut("refuse")
        wait_for(b.is_leader, timeout=30, what="b to take over from a cut-off a")
        assert not a.is_leader()
        with pytest.raises(Fenced):
            a.guards()
        assert log.items[:3] == [("a", "started"), ("a", "stopped"), ("b", "started")]
    finally:
        proxy.restore()
        a.stop()
        b.stop()
        proxy.close()


def test_a_follower_reads_nothing_while_the_leader_holds_and_campaigns_when_the_key_goes(
    etcd_gateway: Gateway, etcd_prefix: str
) -> None:
    # A fleet's followers cost etcd a quiet watch each, not a read every retry period, and
    # campaign as soon as they see the key go.
    log = Log()
    a = LeaderElection(etcd_gateway, "scheduler", "a", etcd_prefix, **log.callbacks("a"))  # type: ignore[arg-type]
    follower_gateway = Gateway(etcd_gateway.endpoints)
    sent: list[str] = []
    post = follower_gateway.post

    def counting(path: str, body: Any) -> Any:
        sent.append(path)
        return post(path, body)

    follower_gateway.post = counting  # type: ignore[method-assign]
    b = LeaderElection(follower_gateway, "scheduler", "b", etcd_prefix, **log.callbacks("b"))  # type: ignore[arg-type]
    a.start()
    try:
        wait_for(a.is_leader, timeout=10, what="a leading")
        b.start()
        wait_for(lambda: "/v3/kv/range" in sent, timeout=10, what="b's first look")
        time.sleep(1.0)  # the watch is placed after the first look
        before = len(sent)
        time.sleep(3 * 2.0)  # three retry periods of the old polling
        assert sent[before:] == []
        assert not b.is_leader()
        # The key gone (a resigns, deleting it, as its lease's expiry would): b sees the
        # deletion and leads well before its next look of the lease duration (15 s).
        a.stop()
        wait_for(b.is_leader, timeout=5, what="b leading after a's resignation")
        assert "/v3/kv/txn" in sent[before:]
    finally:
        a.stop()
        b.stop()
        follower_gateway.close()
