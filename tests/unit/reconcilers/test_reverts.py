"""How a revert by hand ended, kept as the Domain's ``Reverted`` condition; and domains
libvirt is busy with, which the Domain reconciler leaves alone."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kvmrec import store as stores
from kvmrec.api.kinds import Manifest, ObjectKey
from kvmrec.backends import domain_xml
from kvmrec.backends.libvirt.live import LiveDomain
from kvmrec.engine.clock import FakeClock
from kvmrec.reconcilers import libvirt_jobs, reverts
from kvmrec.store.base import StatusConflict, Store
from kvmrec.store.records import Status
from support import etcd

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
KEY = ObjectKey("Domain", "web")
XML = "<domain type='kvm'><name>web</name><memory unit='KiB'>65536</memory></domain>"


def _live(state: str, reason: str, *, busy: bool = False) -> LiveDomain:
    return LiveDomain(
        config=domain_xml.parse(XML),
        state=state,
        reason=reason,
        autostart=False,
        fingerprint=(XML, state == "paused", False),
        busy=busy,
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return stores.open(tmp_path / "state.db")


def _manage(store: Store, **spec: Any) -> None:
    manifest = Manifest(
        "Domain", "web", {"type": "kvm", "vcpus": 1, "memory": "64Mi", **spec}, "web.yaml", 0
    )
    store.apply(manifest, T0)


def test_a_failed_revert_is_a_warning_event_and_a_false_condition(store: Store) -> None:
    _manage(store)
    reverts.record(store, KEY, failed=True, message="revert to s1 failed: QEMU said no", now=T0)
    status = store.get_status(KEY)
    assert status is not None
    condition = status.condition("Reverted")
    assert condition is not None
    assert (condition.status, condition.reason) == ("False", "RevertFailed")
    assert condition.message == "revert to s1 failed: QEMU said no"
    [event] = [e for e in store.events(KEY) if e.reason == "RevertFailed"]
    assert event.type == "Warning" and "QEMU said no" in event.message

    later = T0 + timedelta(minutes=1)
    reverts.record(store, KEY, failed=False, message="reverted to s2 by hand", now=later)
    status = store.get_status(KEY)
    assert status is not None and status.is_true("Reverted")


def test_a_revert_that_never_failed_leaves_the_status_alone(store: Store) -> None:
    _manage(store)
    reverts.record(store, KEY, failed=False, message="reverted to s1 by hand", now=T0)
    assert store.get_status(KEY) is None
    assert [e.reason for e in store.events(KEY)] == ["Reverted"]


def test_a_domain_no_manifest_manages_gets_the_event_only(store: Store) -> None:
    reverts.record(store, KEY, failed=True, message="failed", now=T0)
    assert store.get_status(KEY) is None
    assert [e.reason for e in store.events(KEY)] == ["RevertFailed"]


@pytest.fixture(params=["sqlite", pytest.param("etcd", marks=pytest.mark.integration)])
def service_and_cli(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Store, Store]]:
    """Two clients of one store: the service's and a command's."""
    if request.param == "sqlite":
        opened = (stores.open(tmp_path / "state.db"), stores.open(tmp_path / "state.db"))
    else:
        endpoints, prefix = etcd.private_prefix(request.addfinalizer)
        url = f"etcd://{endpoints}{prefix}"
        opened = (stores.open(url, host="h1"), stores.open(url, host="h1"))
    yield opened
    for store in opened:
        store.close()


def test_a_reconcile_s_write_over_the_condition_fails_and_the_retry_keeps_it(
    service_and_cli: tuple[Store, Store],
) -> None:
    # `kvmrec snapshot revert` (another client) records the condition while the service
    # reconciles from a status read before: the store refuses the service's write over
    # what it has not seen, and the retry, which reads the status again, starts from it.
    service, cli = service_and_cli
    _manage(service)
    service.record(KEY, Status(observed_generation=1), [], T0)
    _, read_before = service.get_with_status(KEY)
    assert read_before is not None
    reverts.record(cli, KEY, failed=True, message="failed: QEMU", now=T0)
    said = [("Normal", "Started", "started")]  # a reconcile that did something
    running = read_before.with_condition("Ready", "True", "Running", "", T0)
    with pytest.raises(StatusConflict):
        service.record(KEY, running, said, T0)
    _, fresh = service.get_with_status(KEY)
    assert fresh is not None
    service.record(KEY, fresh.with_condition("Ready", "True", "Running", "", T0), said, T0)
    written = cli.get_status(KEY)
    assert written is not None and written.is_true("Ready")
    condition = written.condition("Reverted")
    assert condition is not None and condition.reason == "RevertFailed"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, "runStrategy Always: kvmrec starts it again from cold"),
        ({"runStrategy": "RerunOnFailure"}, "runStrategy RerunOnFailure: kvmrec starts it"),
        ({"runStrategy": "Manual"}, "runStrategy Manual: left as it is"),
        ({"runStrategy": "Halted"}, "runStrategy Halted: left as it is"),
    ],
)
def test_what_becomes_of_the_guest_follows_its_run_strategy(
    store: Store, spec: dict[str, Any], expected: str
) -> None:
    _manage(store, **spec)
    said = reverts.what_next(store.get(KEY), _live("shutoff", "failed"))
    assert said.startswith("the guest is shutoff (failed); ") and expected in said


def test_what_becomes_of_a_guest_without_a_manifest_or_still_running(
    store: Store,
) -> None:
    assert "no manifest manages it" in reverts.what_next(None, _live("shutoff", "failed"))
    assert reverts.what_next(None, _live("running", "booted")) == "the guest is running"
    assert reverts.what_next(None, None) == "the domain is gone"


@pytest.mark.parametrize(
    ("live", "job"),
    [
        # libvirt 9.0 pauses a guest with SAVE for an internal snapshot
        pytest.param(_live("paused", "save"), True, id="paused-save"),
        pytest.param(_live("paused", "snapshot"), True, id="paused-snapshot"),
        # a revert: QEMU starts paused and loads the snapshot
        pytest.param(_live("paused", "starting-up"), True, id="paused-starting-up"),
        pytest.param(_live("paused", "migration"), True, id="paused-migration"),
        pytest.param(_live("paused", "user", busy=True), True, id="paused-user-busy"),
        pytest.param(_live("running", "booted", busy=True), True, id="running-busy"),
        # someone paused it: runStrategy Always resumes it
        pytest.param(_live("paused", "user"), False, id="paused-user"),
        pytest.param(_live("paused", "ioerror"), False, id="paused-ioerror"),
        pytest.param(_live("running", "booted"), False, id="running"),
    ],
)
def test_libvirts_own_jobs_are_waited_for(live: LiveDomain, job: bool) -> None:
    plan = libvirt_jobs.Jobs(FakeClock()).plan(live.config.name, live)
    if not job:
        assert plan is None
        return
    assert plan is not None
    assert plan.wait == libvirt_jobs.RETRY and plan.wait_reason == "LibvirtJob"
    assert [s.action for s in plan.steps] == ["wait"] and live.reason in plan.steps[0].detail


def test_a_pause_for_a_job_that_is_gone_is_an_ordinary_pause_after_a_while() -> None:
    clock = FakeClock()
    jobs = libvirt_jobs.Jobs(clock)
    paused = _live("paused", "starting-up")
    assert jobs.plan("web", paused) is not None
    clock.advance(libvirt_jobs.STALE - 1)
    assert jobs.plan("web", paused) is not None
    clock.advance(1)
    assert jobs.plan("web", paused) is None, "no job for STALE seconds: kvmrec's to resume"
    # A job reported again starts the count afresh.
    assert jobs.plan("web", _live("paused", "starting-up", busy=True)) is not None
    assert jobs.plan("web", paused) is not None


def test_a_failed_post_copy_migration_is_never_resumed() -> None:
    clock = FakeClock()
    jobs = libvirt_jobs.Jobs(clock)
    assert jobs.plan("web", _live("paused", "postcopy-failed")) is not None
    clock.advance(10 * libvirt_jobs.STALE)
    assert jobs.plan("web", _live("paused", "postcopy-failed")) is not None


def test_the_command_writes_again_over_a_status_the_service_wrote_meanwhile(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _manage(store)
    service = stores.open(tmp_path / "state.db")
    read = store.get_status

    def read_then_the_service_writes(key: ObjectKey) -> Status | None:
        found = read(key)
        if service.get_status(key) is None:  # once: the service's own write meanwhile
            service.record(key, Status(observed_generation=1, retries=3), [], T0)
        return found

    monkeypatch.setattr(store, "get_status", read_then_the_service_writes)
    reverts.record(store, KEY, failed=True, message="failed: QEMU", now=T0)
    service.close()
    status = read(KEY)
    assert status is not None and status.retries == 3  # the service's write, kept
    condition = status.condition("Reverted")
    assert condition is not None and condition.reason == "RevertFailed"
    assert [e.reason for e in store.events(KEY)] == ["RevertFailed"]  # told once
