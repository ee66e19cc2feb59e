"""The service's reconcile on ``test:///default``: when it returns, its outcome is stored.

What the next step (the next reconcile of the key, or an object waiting for it) reads is
the status, its events and the history record of that reconcile, all three from another
client of the store, as ``kvmrec status`` and ``kvmrec history`` would read them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import libvirt
import pytest

from kvmrec import store as stores
from kvmrec.api.kinds import Manifest, ObjectKey
from kvmrec.backends.errors import BackendError
from kvmrec.engine.clock import FakeClock
from kvmrec.engine.workers import PermanentError
from kvmrec.service import Service
from kvmrec.settings import Settings
from kvmrec.store.base import Store, StoreError

URI = "test:///default"
SPEC: dict[str, Any] = {"type": "kvm", "memory": "64Mi", "console": "serial", "disks": []}


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    settings = Settings(manifests=manifests, connect=URI, state=tmp_path / "state.db")
    svc = Service(settings, clock=FakeClock())
    svc.hypervisor.open()
    prefix = f"ut-{uuid.uuid4().hex[:8]}-"
    svc.prefix = prefix  # type: ignore[attr-defined]
    try:
        yield svc
    finally:
        conn = libvirt.open(URI)
        for dom in conn.listAllDomains(0):
            if dom.name().startswith(prefix):
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        conn.close()
        svc.hypervisor.close()
        svc.store.close()


@contextmanager
def _reader(service: Service) -> Iterator[Store]:
    """Another client of the state file, as ``kvmrec status`` and ``history`` are."""
    reader = stores.open(service.settings.state, read_only=True)
    try:
        yield reader
    finally:
        reader.close()


def apply(service: Service, name: str, **spec: Any) -> ObjectKey:
    manifest = Manifest("Domain", name, SPEC | spec, f"{name}.yaml", 1)
    service.store.apply(manifest, service.clock.wall())
    return manifest.key


def test_a_converged_domain_has_status_events_and_history_when_the_reconcile_returns(
    service: Service,
) -> None:
    key = apply(service, service.prefix + "web")  # type: ignore[attr-defined]
    service.dispatch.reconcile(key)
    with _reader(service) as reader:
        status = reader.get_status(key)
        assert status is not None and status.is_true("Ready") and status.observed_generation == 1
        assert {"Created", "Started"} <= {e.reason for e in reader.events(key)}
        [record] = reader.reconciles(key)
        assert (record.result, record.message) == ("ok", None)


def test_a_failed_reconcile_has_its_error_in_status_and_history(service: Service) -> None:
    key = apply(service, service.prefix + "db", type="nosuchtype")  # type: ignore[attr-defined]
    with pytest.raises(BackendError) as raised:
        service.dispatch.reconcile(key)
    with _reader(service) as reader:
        status = reader.get_status(key)
        assert status is not None and status.last_error == str(raised.value)
        assert status.retries == 1
        [record] = reader.reconciles(key)
        assert (record.result, record.message) == ("error", str(raised.value))


def test_a_blocked_domain_has_its_status_and_a_permanent_record(service: Service) -> None:
    key = apply(service, service.prefix + "db", disks=[{"path": "/etc/kvmrec-not-here.qcow2"}])  # type: ignore[attr-defined]
    with pytest.raises(PermanentError) as raised:
        service.dispatch.reconcile(key)
    with _reader(service) as reader:
        status = reader.get_status(key)
        assert status is not None and not status.is_true("Ready")
        assert status.last_error == str(raised.value)
        [record] = reader.reconciles(key)
        assert (record.result, record.message) == ("permanent", str(raised.value))


def test_reconciles_run_together_read_in_one_go_and_store_their_outcomes_in_one_transaction(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = service.prefix  # type: ignore[attr-defined]
    good = [apply(service, f"{prefix}web{i}") for i in range(3)]
    bad = apply(service, f"{prefix}db", type="nosuchtype")
    blocked = apply(service, f"{prefix}blk", disks=[{"path": "/etc/kvmrec-not-here.qcow2"}])
    batches: list[int] = []
    reads: list[int] = []
    record_many, get_many = service.store.record_many, service.store.get_many_with_status

    def counted(writes: Any) -> Any:
        batches.append(len(writes))
        return record_many(writes)

    def counted_reads(keys: Any) -> Any:
        reads.append(len(keys))
        return get_many(keys)

    def read_alone(key: Any) -> Any:
        raise AssertionError(f"{key} read alone in a batch")

    monkeypatch.setattr(service.store, "record_many", counted)
    monkeypatch.setattr(service.store, "get_many_with_status", counted_reads)
    monkeypatch.setattr(service.store, "get_with_status", read_alone)
    outcomes = service.dispatch.reconcile_many([*good, bad, blocked])
    assert reads == [5]  # every object and status in one read
    assert batches == [5]  # every outcome in one write
    assert [o.error for o in outcomes[:3]] == [None, None, None]
    assert isinstance(outcomes[3].error, BackendError)
    assert isinstance(outcomes[4].error, PermanentError)
    with _reader(service) as reader:
        for key in good:
            status = reader.get_status(key)
            assert status is not None and status.is_true("Ready")
            [record] = reader.reconciles(key)
            assert record.result == "ok" and record.duration > 0
        assert [r.result for r in reader.reconciles(bad)] == ["error"]
        assert [r.result for r in reader.reconciles(blocked)] == ["permanent"]


def test_a_write_that_fails_fails_its_reconcile_when_run_together(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = service.prefix  # type: ignore[attr-defined]
    keys = [apply(service, f"{prefix}web{i}") for i in range(2)]

    def second_refused(writes: Any) -> Any:
        return [None, StoreError("disk full")]

    monkeypatch.setattr(service.store, "record_many", second_refused)
    outcomes = service.dispatch.reconcile_many(keys)
    assert outcomes[0].error is None and outcomes[0].result is not None
    assert isinstance(outcomes[1].error, StoreError) and outcomes[1].result is None
