"""The supervised watch on a real etcd: changes in order, none lost or repeated across a
dropped connection, an etcd restart and a compaction (re-list, then carry on).

Compaction and restarts happen only on a private etcd: the stack's is shared."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

import pytest
from realstack import wait_for

from kvmrec.store.etcd.gateway import Gateway
from kvmrec.store.etcd.watch import EtcdWatching
from kvmrec.store.fleet import Change
from support.etcd_cluster import PrivateEtcd
from support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration


class Mirror:
    """What a consumer keeps: the keys under the prefix, from changes and re-lists."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.lock = threading.Lock()
        self.state: dict[str, bytes] = {}
        self.changes: list[Change] = []
        self.relists: list[int] = []

    def on_changes(self, changes: Sequence[Change]) -> None:
        with self.lock:
            for change in changes:
                self.changes.append(change)
                if change.type == "DELETE":
                    self.state.pop(change.key, None)
                else:
                    self.state[change.key] = change.value

    def on_relist(self, prefix: str, revision: int) -> None:
        listed = self.gateway.range(prefix.encode(), prefix=True, revision=revision).kvs
        self.gateway.close()  # the watch thread's connection
        with self.lock:
            self.relists.append(revision)
            self.state = {kv.key.decode(): kv.value for kv in listed}

    def values(self) -> list[bytes]:
        with self.lock:
            return [c.value for c in self.changes]

    def snapshot(self) -> dict[str, bytes]:
        with self.lock:
            return dict(self.state)


def _etcd_state(gateway: Gateway, prefix: str) -> dict[str, bytes]:
    return {kv.key.decode(): kv.value for kv in gateway.range(prefix.encode(), prefix=True).kvs}


@pytest.fixture
def proxy_to_stack(etcd_gateway: Gateway) -> Iterator[TcpProxy]:
    proxy = TcpProxy(etcd_gateway.endpoints[0])
    yield proxy
    proxy.close()


def test_changes_arrive_in_order_and_resume_after_the_connection_drops(
    etcd_gateway: Gateway, etcd_prefix: str, proxy_to_stack: TcpProxy
) -> None:
    prefix = f"{etcd_prefix}/objects/"
    other = f"{etcd_prefix}/placements/"
    start = etcd_gateway.range(prefix.encode(), count_only=True).revision + 1
    mirror = Mirror(etcd_gateway)
    through_proxy = Gateway([proxy_to_stack.endpoint], timeout=2)
    watch = EtcdWatching(through_proxy, read_timeout=1.0).watch(
        [prefix, other], start, mirror.on_changes, mirror.on_relist
    )
    try:
        for i in range(5):
            etcd_gateway.put(f"{prefix}k{i}".encode(), f"v{i}".encode())
        etcd_gateway.put(f"{other}p".encode(), b"p0")
        etcd_gateway.put(f"{etcd_prefix}/elsewhere".encode(), b"not watched")
        wait_for(lambda: len(mirror.values()) == 6, timeout=10, what="the first changes")
        assert [c.value for c in mirror.changes if c.key.startswith(prefix)] == [
            b"v0", b"v1", b"v2", b"v3", b"v4"
        ]  # fmt: skip

        proxy_to_stack.cut("refuse")
        for i in range(5, 10):
            etcd_gateway.put(f"{prefix}k{i}".encode(), f"v{i}".encode())
        etcd_gateway.delete(f"{prefix}k0".encode())
        proxy_to_stack.restore()

        wait_for(lambda: len(mirror.values()) == 12, timeout=20, what="the changes while cut")
        mine = [c for c in mirror.changes if c.key.startswith(prefix)]
        assert [c.value for c in mine[:10]] == [f"v{i}".encode() for i in range(10)]
        assert (mine[10].type, mine[10].key) == ("DELETE", f"{prefix}k0")
        assert [c.revision for c in mine] == sorted({c.revision for c in mine})  # no repeats
        assert mirror.relists == []
        assert mirror.snapshot() == _etcd_state(etcd_gateway, prefix) | _etcd_state(
            etcd_gateway, other
        )
    finally:
        watch.stop()
        through_proxy.close()


def test_a_failing_callback_gets_the_same_changes_again_and_a_quiet_watch_stays_live(
    etcd_gateway: Gateway, etcd_prefix: str
) -> None:
    prefix = f"{etcd_prefix}/objects/"
    mirror = Mirror(etcd_gateway)
    failures = [RuntimeError("the consumer is not ready yet")]

    def flaky(changes: Sequence[Change]) -> None:
        if failures:
            raise failures.pop()
        mirror.on_changes(changes)

    start = etcd_gateway.range(prefix.encode(), count_only=True).revision + 1
    watch = EtcdWatching(Gateway(etcd_gateway.endpoints), read_timeout=0.5).watch(
        [prefix], start, flaky, mirror.on_relist
    )
    try:
        etcd_gateway.put(f"{prefix}a".encode(), b"1")
        wait_for(lambda: mirror.values() == [b"1"], timeout=10, what="the change, again")
        time.sleep(2)  # several read timeouts without a change: probed and watched again
        etcd_gateway.put(f"{prefix}b".encode(), b"2")
        wait_for(lambda: len(mirror.values()) == 2, timeout=10, what="a change after quiet")
        assert mirror.values() == [b"1", b"2"]
    finally:
        watch.stop()


def test_a_watch_carries_on_after_etcd_restarts(private_etcd: PrivateEtcd) -> None:
    gateway = Gateway([private_etcd.endpoint], timeout=2)
    mirror = Mirror(gateway)
    start = gateway.range(b"/w/", count_only=True).revision + 1
    watch = EtcdWatching(gateway, read_timeout=1.0).watch(
        ["/w/"], start, mirror.on_changes, mirror.on_relist
    )
    try:
        gateway.put(b"/w/a", b"1")
        wait_for(lambda: mirror.values() == [b"1"], timeout=10, what="the first change")
        private_etcd.stop()
        private_etcd.start()
        gateway.close()
        gateway.put(b"/w/b", b"2")
        gateway.put(b"/w/a", b"3")
        wait_for(lambda: len(mirror.values()) >= 3, timeout=20, what="changes after restart")
        assert mirror.values() == [b"1", b"2", b"3"]
        assert mirror.relists == []
    finally:
        watch.stop()
        gateway.close()


def test_a_compaction_under_a_running_watch_makes_the_consumer_relist_and_carry_on(
    private_etcd: PrivateEtcd,
) -> None:
    direct = Gateway([private_etcd.endpoint])
    proxy = TcpProxy(private_etcd.endpoint)
    through_proxy = Gateway([proxy.endpoint], timeout=2)
    mirror = Mirror(direct)
    direct.put(b"/c/old", b"0")
    start = direct.range(b"/c/", count_only=True).revision + 1
    watch = EtcdWatching(through_proxy, read_timeout=1.0).watch(
        ["/c/"], start, mirror.on_changes, mirror.on_relist
    )
    try:
        direct.put(b"/c/a", b"1")
        wait_for(lambda: mirror.values() == [b"1"], timeout=10, what="the first change")

        proxy.cut("refuse")  # the watch misses what follows, and it is compacted away
        direct.put(b"/c/b", b"2")
        direct.delete(b"/c/old")
        compacted = direct.put(b"/c/a", b"3")
        direct.compact(compacted)
        proxy.restore()

        wait_for(lambda: mirror.relists, timeout=20, what="a re-list")
        assert mirror.relists[0] >= compacted
        direct.put(b"/c/after", b"4")
        wait_for(lambda: b"4" in mirror.values(), timeout=10, what="a change after the re-list")
        assert mirror.snapshot() == {"/c/a": b"3", "/c/b": b"2", "/c/after": b"4"}
        assert mirror.values().count(b"4") == 1
    finally:
        watch.stop()
        through_proxy.close()
        direct.close()
        proxy.close()
