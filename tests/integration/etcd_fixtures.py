"""Fixtures for tests on etcd: the stack's etcd under a key prefix of the test's own (gone
afterwards), and a private etcd for what the shared one must never undergo."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmrec.store.etcd.gateway import Gateway, parse_endpoints
from support.etcd_cluster import PrivateEtcd


@pytest.fixture
def etcd_gateway(stack: dict[str, str]) -> Iterator[Gateway]:
    endpoints = stack.get("KVMREC_ETCD") or os.environ.get("KVMREC_ETCD", "127.0.0.1:2379")
    gateway = Gateway(parse_endpoints(endpoints))
    yield gateway
    gateway.close()


@pytest.fixture
def etcd_prefix(etcd_gateway: Gateway) -> Iterator[str]:
    """``/kvmrec-test-XXXXXXXX``: every key the test writes goes under it."""
    prefix = f"/kvmrec-test-{uuid.uuid4().hex[:8]}"
    yield prefix
    etcd_gateway.delete(f"{prefix}/".encode(), prefix=True)


@pytest.fixture
def private_etcd(tmp_path: Path) -> Iterator[PrivateEtcd]:
    etcd = PrivateEtcd(tmp_path / "etcd-data")
    etcd.start()
    yield etcd
    etcd.stop()
