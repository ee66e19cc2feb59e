"""A host's etcd traffic through a proxy the test cuts: requests fail while it is cut
(blackholed: they time out; refused: they fail at once) and work again once restored,
while etcd itself never noticed."""

from __future__ import annotations

import socket

import pytest

from support import etcd_cluster as etcd
from support.lab import stack_etcd_url
from support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration


def dropped(sock: socket.socket) -> bool:
    """The peer closed or reset the connection (a hanging one times out: an error)."""
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def test_a_cut_proxy_blackholes_etcd_until_restored(etcd_proxy: TcpProxy, etcd_prefix: str) -> None:
    key = f"{etcd_prefix}/k"
    etcd.put(etcd_proxy.url, key, "before")
    held = socket.create_connection((etcd_proxy.host, etcd_proxy.port), timeout=5)
    held.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"etcdserver" in held.recv(4096)

    etcd_proxy.cut()
    with pytest.raises(etcd.EtcdError, match="timed out"):
        etcd.put(etcd_proxy.url, key, "while cut", timeout=1)
    # The connection carried at the cut was dropped, not left hanging.
    assert dropped(held)
    held.close()
    assert etcd.get(stack_etcd_url(), key) == "before"  # etcd itself is fine

    etcd_proxy.restore()
    etcd.put(etcd_proxy.url, key, "after")
    assert etcd.get(etcd_proxy.url, key) == "after"


def test_a_proxy_cut_to_refuse_fails_requests_at_once(
    etcd_proxy: TcpProxy, etcd_prefix: str
) -> None:
    key = f"{etcd_prefix}/k"
    etcd_proxy.cut("refuse")
    with pytest.raises(etcd.EtcdError) as failed:
        etcd.put(etcd_proxy.url, key, "while cut", timeout=10)
    assert "timed out" not in str(failed.value)
    etcd_proxy.restore()
    etcd.put(etcd_proxy.url, key, "after")
    assert etcd.get(stack_etcd_url(), key) == "after"


def test_one_host_cut_off_leaves_the_others_reaching_etcd(
    lab_etcd_proxies: dict[str, TcpProxy], etcd_prefix: str
) -> None:
    cut_off, *others = lab_etcd_proxies
    lab_etcd_proxies[cut_off].cut()
    with pytest.raises(etcd.EtcdError):
        etcd.put(lab_etcd_proxies[cut_off].url, f"{etcd_prefix}/{cut_off}", "x", timeout=1)
    for host in others:
        etcd.put(lab_etcd_proxies[host].url, f"{etcd_prefix}/{host}", host)
        assert etcd.get(stack_etcd_url(), f"{etcd_prefix}/{host}") == host
    assert etcd.get(stack_etcd_url(), f"{etcd_prefix}/{cut_off}") is None
