"""Metrics and health endpoints on TCP and on a unix socket; log lines with their object."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kvmrec import logs
from kvmrec import store as stores
from kvmrec.api.kinds import ObjectKey
from kvmrec.metrics import Endpoint, Metrics
from kvmrec.reconcilers import recording
from kvmrec.store.records import Status
from support.http import http_get

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["tcp", "unix"])
def endpoint(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Endpoint, dict]]:
    state = {"healthy": True, "ready": False, "depth": 3.0, "drifted": 1.0, "libvirt": True}
    metrics = Metrics()
    metrics.bind(
        queue_depth=lambda: state["depth"],
        drifted=lambda: state["drifted"],
        backends={"libvirt": lambda: state["libvirt"], "ovsdb": lambda: False},
    )
    metrics.observe("Domain", "ok", 0.02)
    metrics.observe("Domain", "error", None)
    listen = "127.0.0.1:0" if request.param == "tcp" else f"unix:{tmp_path}/metrics.sock"
    server = Endpoint(
        listen, metrics, healthy=lambda: state["healthy"], ready=lambda: state["ready"]
    )
    server.start()
    yield server, state
    server.stop()


def test_metrics_are_served_and_read_when_scraped(endpoint: tuple[Endpoint, dict]) -> None:
    server, state = endpoint
    code, body = http_get(server.address, "/metrics")
    assert code == 200
    assert 'kvmrec_reconciles_total{kind="Domain",result="ok"} 1.0' in body
    assert 'kvmrec_retries_total{kind="Domain"} 1.0' in body
    assert "kvmrec_queue_depth 3.0" in body
    assert 'kvmrec_backend_up{backend="libvirt"} 1.0' in body
    assert 'kvmrec_backend_up{backend="ovsdb"} 0.0' in body
    assert 'kvmrec_reconcile_duration_seconds_count{kind="Domain"} 1.0' in body
    state["depth"], state["libvirt"] = 7.0, False
    _, body = http_get(server.address, "/metrics")
    assert "kvmrec_queue_depth 7.0" in body
    assert 'kvmrec_backend_up{backend="libvirt"} 0.0' in body


def test_health_and_readiness(endpoint: tuple[Endpoint, dict]) -> None:
    server, state = endpoint
    assert http_get(server.address, "/healthz")[0] == 200
    assert http_get(server.address, "/readyz")[0] == 503
    state["ready"], state["healthy"] = True, False
    assert http_get(server.address, "/readyz")[0] == 200
    assert http_get(server.address, "/healthz")[0] == 503
    assert http_get(server.address, "/nope")[0] == 404


def test_json_log_lines_carry_the_object_being_reconciled(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.quiet(False)  # as the service logs (an earlier command in this process was quiet)
    logs.setup("INFO", "json")
    log = logging.getLogger("kvmrec.test")
    try:
        with logs.about("Domain/web"):
            log.info("started the guest")
        log.info("no object here")
    finally:
        logs.setup("WARNING", "text")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["object"] == "Domain/web" and lines[0]["message"] == "started the guest"
    assert lines[0]["level"] == "INFO" and lines[0]["logger"] == "kvmrec.test"
    assert "object" not in lines[1]


def test_text_log_lines_name_the_object_once(capsys: pytest.CaptureFixture[str]) -> None:
    logs.quiet(False)  # as the service logs (an earlier command in this process was quiet)
    logs.setup("INFO", "text")
    log = logging.getLogger("kvmrec.test")
    try:
        with logs.about("Network/lan"):
            log.info("restarted")
            log.info("Network/lan: already named")
    finally:
        logs.setup("WARNING", "text")
    first, second = capsys.readouterr().err.splitlines()
    assert first.endswith("restarted [Network/lan]")
    assert second.endswith("Network/lan: already named")


def test_every_event_is_logged_once_as_kind_slash_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Condition transitions, deletions and manifest events alike: once each, as
    ``kvmrec events`` tells them, never a Python repr of the key."""
    store = stores.open(tmp_path / "state.db")
    key = ObjectKey("Domain", "web-1")
    old = Status().with_condition("Ready", "False", "Stopped", "", T0)
    new = old.with_condition("Ready", "True", "Running", "", T0)
    with caplog.at_level(logging.INFO):
        recording.commit(store, key, old, new, T0, [("Normal", "Started", "started the guest")])
        store.add_event(key, "Normal", "Deleted", "domain web-1 is gone", T0)
        store.add_event(None, "Warning", "ManifestInvalid", "new.yaml: line 3: bad", T0)
    store.close()
    logged = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert logged == [
        ("INFO", "Domain/web-1: Started: started the guest"),
        ("INFO", "Domain/web-1: Running: Ready=True (Running)"),
        ("INFO", "Domain/web-1: Deleted: domain web-1 is gone"),
        ("WARNING", "ManifestInvalid: new.yaml: line 3: bad"),
    ]
    assert [getattr(r, "object", None) for r in caplog.records] == ["Domain/web-1"] * 3 + [None]
