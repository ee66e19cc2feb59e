"""A host's lease on the real etcd: renewed, lost when it cannot be renewed (fenced before
the TTL is over), and only ever replaced explicitly."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from realstack import wait_for

from kvmrec.store.etcd.fencing import Fenced
from kvmrec.store.etcd.gateway import Gateway, put_op
from kvmrec.store.etcd.leases import HostLease
from support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(etcd_gateway: Gateway) -> Iterator[TcpProxy]:
    forwarder = TcpProxy(etcd_gateway.endpoints[0])
    yield forwarder
    forwarder.close()


def test_a_lease_cut_off_from_etcd_fences_before_its_ttl_and_is_not_replaced_silently(
    etcd_gateway: Gateway, etcd_prefix: str, proxy: TcpProxy
) -> None:
    key = f"{etcd_prefix}/hosts/h1".encode()
    lease = HostLease(Gateway([proxy.endpoint]), key)
    lost = threading.Event()
    calls: list[int] = []
    lease.on_lost(lambda: (calls.append(1), lost.set()))
    lease_id = lease.acquire()
    try:
        etcd_gateway.put(key, b"{}", lease_id)
        guards = lease.guards()
        assert etcd_gateway.txn(guards, [put_op(key + b"/probe", b"1")]).succeeded

        proxy.cut("refuse")
        # Fenced after TTL - margin without a renewal; the lease itself is still alive in
        # etcd then (the renewal stopped less than a TTL ago), so the host stops first.
        wait_for(lost.is_set, timeout=14, what="the lease to be known lost")
        assert etcd_gateway.get(key) is not None, "fenced only after etcd expired the key"
        with pytest.raises(Fenced):
            lease.guards()
        assert lease.remaining() == 0

        # etcd, too, refuses the guarded write once the lease has expired there.
        wait_for(lambda: etcd_gateway.get(key) is None, timeout=20, what="the key to expire")
        assert not etcd_gateway.txn(guards, [put_op(key + b"/late", b"1")]).succeeded
        assert etcd_gateway.get(key + b"/late") is None

        proxy.restore()
        wait_for(lambda: len(calls) >= 1, timeout=5, what="the callback")
        with pytest.raises(Fenced):  # reconnected, still fenced: no silent new lease
            lease.guards()
        assert calls == [1]

        new_id = lease.reacquire()
        assert new_id != lease_id
        etcd_gateway.put(key, b"{}", new_id)
        assert etcd_gateway.txn(lease.guards(), [put_op(key + b"/again", b"1")]).succeeded
    finally:
        lease.close()


def test_a_lease_etcd_no_longer_knows_is_lost_at_the_next_renewal(
    etcd_gateway: Gateway, etcd_prefix: str
) -> None:
    key = f"{etcd_prefix}/hosts/h2".encode()
    lease = HostLease(etcd_gateway, key, renew_every=0.5)
    lost = threading.Event()
    lease.on_lost(lost.set)
    lease_id = lease.acquire()
    try:
        etcd_gateway.revoke(lease_id)  # as if it had expired
        wait_for(lost.is_set, timeout=5, what="the revoked lease to be known lost")
        with pytest.raises(Fenced):
            lease.guards()
    finally:
        lease.close()
