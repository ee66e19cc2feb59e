"""The etcd the store tests use: the stack's ($KVMREC_ETCD), each test under a prefix of
its own that is deleted afterwards.

With $KVMREC_ETCD set (the stack's env) an etcd that does not answer fails the tests; without
it, on a machine where the stack was never started, they are skipped, saying why.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable

import pytest

from kvmrec.store.etcd.gateway import EtcdUnavailable, Gateway, parse_endpoints

DEFAULT = "http://127.0.0.1:2379"


def endpoints() -> str:
    """``host:port[,...]`` of the etcd to use, or a skip where none was asked for and none
    answers."""
    where = os.environ.get("KVMREC_ETCD")
    if where is None and not _answers(DEFAULT):
        pytest.skip(f"no etcd at {DEFAULT} (set KVMREC_ETCD, or start the stack)")
    return (where or DEFAULT).replace("http://", "")


@functools.cache
def _answers(url: str) -> bool:
    gateway = Gateway(parse_endpoints(url.replace("http://", "")), timeout=1.0)
    try:
        gateway.range(b"/", count_only=True)
        return True
    except EtcdUnavailable:
        return False
    finally:
        gateway.close()


def private_prefix(cleanup: Callable[[Callable[[], None]], None]) -> tuple[str, str]:
    """(endpoints, a new prefix) with the prefix's keys deleted by ``cleanup`` at the end."""
    where = endpoints()
    prefix = f"/kvmrec-test-{uuid.uuid4().hex[:12]}"

    def forget() -> None:
        gateway = Gateway(parse_endpoints(where))
        try:
            gateway.delete(f"{prefix}/".encode(), prefix=True)
        finally:
            gateway.close()

    cleanup(forget)
    return where, prefix
