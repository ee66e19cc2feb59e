"""Three etcd members: losing one changes nothing, losing two refuses writes (no quorum),
and with a member back every write made before is still there."""

from __future__ import annotations

import pytest
from realstack import wait_for

from support import etcd_cluster as etcd
from support.etcd_cluster import EtcdCluster

pytestmark = pytest.mark.integration


def writes(url: str, key: str, value: str) -> bool:
    try:
        etcd.put(url, key, value, timeout=2)
    except etcd.EtcdError:
        return False
    return True


def test_three_members_survive_one_loss_and_refuse_writes_without_quorum(
    etcd_cluster: EtcdCluster,
) -> None:
    m1, m2, m3 = (m.client_url for m in etcd_cluster.members)
    etcd.put(m1, "/kvmrec-test-q/a", "1")

    etcd_cluster.stop_member(0, kill=True)
    # A new leader may need an election first: wait for it, with a deadline.
    wait_for(lambda: writes(m2, "/kvmrec-test-q/b", "2"), 20, "a write with one member lost")
    assert etcd.get(m3, "/kvmrec-test-q/a") == "1"

    etcd_cluster.stop_member(1, kill=True)
    with pytest.raises(etcd.EtcdError):
        etcd.put(m3, "/kvmrec-test-q/c", "3", timeout=2)
    with pytest.raises(etcd.EtcdError):
        etcd.get(m3, "/kvmrec-test-q/a", timeout=2)  # linearizable reads need a quorum too

    etcd_cluster.start_member(1)
    wait_for(lambda: writes(m3, "/kvmrec-test-q/d", "4"), 30, "a write with quorum back")
    assert etcd.get(m2, "/kvmrec-test-q/a") == "1"
    assert etcd.get(m2, "/kvmrec-test-q/b") == "2"
