"""Hosts registered in the real etcd: Ready while their lease lives, NotReady once it
expires, with what they registered kept, and an operator's cordon kept over re-registration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from realstack import wait_for

from kvmrec.fleet.scheduling import SILENT
from kvmrec.store.etcd.gateway import Gateway
from kvmrec.store.etcd.hosts import EtcdHosts
from kvmrec.store.etcd.leases import HostLease
from kvmrec.store.fleet_records import Capacity, HostRecord
from support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration


def _host(name: str) -> HostRecord:
    return HostRecord(
        name=name,
        labels={"zone": "a"},
        capacity=Capacity(memory_bytes=8 << 30, vcpus=4),
        domain_type="kvm",
        ovs_datapath="netdev",
        version="0.1",
        ready=True,
        last_heartbeat=None,
    )


def _silent(host: HostRecord | None) -> bool:
    assert host is not None and host.ready, "h1 went NotReady before it was seen silent"
    return host.unrenewed_for is not None and host.unrenewed_for >= SILENT


def test_a_host_that_stops_renewing_is_not_ready_within_20_seconds(
    etcd_gateway: Gateway, etcd_prefix: str
) -> None:
    hosts = EtcdHosts(etcd_gateway, etcd_prefix)
    proxy = TcpProxy(etcd_gateway.endpoints[0])  # h1 reaches etcd through it
    leases = {}
    registered = datetime.now(UTC)
    for name, path in (("h1", Gateway([proxy.endpoint])), ("h2", etcd_gateway)):
        leases[name] = HostLease(path, hosts.live_key(name))
        leases[name].acquire()
        EtcdHosts(etcd_gateway, etcd_prefix, leases[name]).register(_host(name), registered)
    try:
        listed = hosts.hosts()
        assert [(h.name, h.ready) for h in listed] == [("h1", True), ("h2", True)]
        assert listed[0].capacity == Capacity(8 << 30, 4)
        assert listed[0].labels == {"zone": "a"}
        # Read from the lease (no write per renewal): within one TTL of now.
        beat = listed[0].last_heartbeat
        assert beat is not None and abs(datetime.now(UTC) - beat) <= timedelta(seconds=16)
        renewed = listed[0].unrenewed_for
        assert renewed is not None and renewed < SILENT

        assert hosts.set_cordoned("h2", True)
        assert not hosts.set_cordoned("nope", True)

        # h1 dies without a word: its renewals stop, its lease expires.
        proxy.cut("refuse")
        # Still Ready for a while, but seen to be silent before etcd deletes its key.
        wait_for(
            lambda: _silent(hosts.host("h1")),
            timeout=20,
            what="h1 silent while its key still exists",
        )
        wait_for(
            lambda: not hosts.host("h1").ready,  # type: ignore[union-attr]
            timeout=20,
            what="h1 NotReady",
        )
        dead = hosts.host("h1")
        assert dead is not None and dead.labels == {"zone": "a"} and dead.version == "0.1"
        assert dead.last_heartbeat == registered  # what was written, no lease to read
        seen = datetime.now(UTC)
        assert hosts.record_last_heartbeat("h1", seen)
        assert hosts.record_last_heartbeat("h1", registered)  # older: kept as it was
        assert hosts.host("h1").last_heartbeat == seen  # type: ignore[union-attr]
        other = hosts.host("h2")
        assert other is not None and other.ready and other.cordoned

        # h2 registers again (a restart): still cordoned.
        EtcdHosts(etcd_gateway, etcd_prefix, leases["h2"]).register(_host("h2"), datetime.now(UTC))
        assert hosts.host("h2").cordoned  # type: ignore[union-attr]
        assert hosts.set_cordoned("h2", False)
        assert not hosts.host("h2").cordoned  # type: ignore[union-attr]
    finally:
        for lease in leases.values():
            lease.close()
        proxy.close()
