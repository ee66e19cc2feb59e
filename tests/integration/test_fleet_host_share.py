"""A fleet host reconciles its own share only: a Domain placed on another host is neither
read nor recorded by it, on joining or on the hourly pass that reconciles everything; and
a reconcile that changes nothing reads its object and status in one request, writing none."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from realstack import domain_manifest, state_of, wait_for

from kvmrec.api.manifests import parse_file
from kvmrec.api.objects import ObjectKey
from kvmrec.service import Service
from kvmrec.settings import Settings
from kvmrec.store.etcd.gateway import Gateway, decode
from kvmrec.store.etcd.placements import EtcdPlacements
from kvmrec.store.etcd.store import EtcdStore

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet_host(
    tmp_path: Path, stack: dict[str, str], etcd_gateway: Gateway, etcd_prefix: str, prefix: str
) -> Iterator[Service]:
    endpoints = ",".join(f"{host}:{port}" for host, port in etcd_gateway.endpoints)
    settings = Settings(
        store=f"etcd://{endpoints}{etcd_prefix}",
        host=f"{prefix}-h1",
        connect=stack["LIBVIRT_DEFAULT_URI"],
        manifests=tmp_path / "none",
        state=tmp_path / "unused.db",
        resync=3600.0,
        full_resync_every=1,  # every periodic pass is the hourly one
    )
    service = Service(settings)
    yield service
    service.stop()


def _history(gateway: Gateway, etcd_prefix: str, name: str) -> int:
    key = f"{etcd_prefix}/history/Domain/{name}/".encode()
    return gateway.range(key, prefix=True, count_only=True).count


def _counting(gateway: Gateway, about: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, each request ``gateway`` sends that names a key containing ``about``:
    its path, and "write" for a transaction that puts or deletes."""
    sent: list[str] = []
    post = gateway.post

    def counted(path: str, body: Any) -> dict[str, Any]:
        keys = [decode(op["key"]) for op in _ops(body) if "key" in op]
        if any(about.encode() in key for key in keys):
            writes = [op for op in body.get("success", ()) if "request_range" not in op]
            sent.append(f"{path} write" if writes else path)
        return post(path, body)

    monkeypatch.setattr(gateway, "post", counted)
    return sent


def _ops(body: Any) -> list[dict[str, Any]]:
    if "success" not in body:
        return [body]
    ops = [*body.get("compare", ())]
    for op in [*body["success"], *body.get("failure", ())]:
        ops.extend(op.values())
    return ops


def _idle(service: Service) -> bool:
    return not service.queue.is_busy() and not service.queue.pending_delayed()


def test_a_domain_placed_elsewhere_is_not_reconciled_here(
    fleet_host: Service,
    conn: Any,
    stack: dict[str, str],
    etcd_gateway: Gateway,
    etcd_prefix: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    here, there = f"{prefix}-here", f"{prefix}-there"
    domain_type = stack["KVMREC_DOMAIN_TYPE"]
    writer = EtcdStore(",".join(f"{h}:{p}" for h, p in etcd_gateway.endpoints), prefix=etcd_prefix)
    try:
        text = domain_manifest(here, domain_type, host=f"{prefix}-h1") + "---\n"
        text += domain_manifest(there, domain_type, host="h2")
        writer.apply_many(parse_file("share.yaml", text.encode()), datetime.now(UTC))
    finally:
        writer.close()
    # Another host, live, that already holds the second Domain.
    etcd_gateway.put(f"{etcd_prefix}/hosts/h2".encode(), b"{}")
    placements = EtcdPlacements(etcd_gateway, etcd_prefix)
    assert placements.place(ObjectKey("Domain", there), "h2", "pinned", None, datetime.now(UTC))

    fleet_host.start(watch=True)
    wait_for(lambda: state_of(conn, here) == "running", 60, f"{here} running")
    wait_for(lambda: _history(etcd_gateway, etcd_prefix, here) > 0, 30, f"{here} recorded")
    wait_for(lambda: _idle(fleet_host), 30, "the host's queue idle")

    assert isinstance(fleet_host.store, EtcdStore)
    sent = _counting(fleet_host.store.client.gateway, f"/Domain/{here}", monkeypatch)
    fleet_host.resync.resync()  # the pass that reconciles every key of the host's share
    wait_for(lambda: _idle(fleet_host), 30, "the host's queue idle after the full pass")

    # The host's one Domain, unchanged: its object and status in one read, no write.
    assert sent == ["/v3/kv/txn"]

    assert _history(etcd_gateway, etcd_prefix, there) == 0
    status = etcd_gateway.range(f"{etcd_prefix}/status/Domain/{there}/{prefix}-h1".encode())
    assert not status.kvs
    assert state_of(conn, there) is None
