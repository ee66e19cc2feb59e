"""Metrics, health and JSON logs of a running `kvmrec run` on the real stack."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from realstack import Controller, domain_manifest, state_of, wait_for

from support.http import http_get

pytestmark = pytest.mark.integration


def test_metrics_health_and_json_logs(
    controller: Controller, conn: Any, prefix: str, stack: dict[str, str], tmp_path: Path
) -> None:
    name = f"{prefix}-obs"
    sock = f"unix:{tmp_path}/metrics.sock"
    controller.write("obs.yaml", domain_manifest(name, stack["KVMREC_DOMAIN_TYPE"]))
    controller.start("--metrics-listen", sock, "--log-format", "json")
    wait_for(lambda: state_of(conn, name) == "running", 30, "running")
    wait_for(lambda: Path(sock.removeprefix("unix:")).exists(), 10, "metrics socket")

    assert http_get(sock, "/healthz") == (200, "ok\n")
    assert http_get(sock, "/readyz") == (200, "ready\n")
    ok_line = 'kvmrec_reconciles_total{kind="Domain",result="ok"}'
    # The guest runs before its reconcile returns and is counted.
    wait_for(lambda: ok_line in http_get(sock, "/metrics")[1], 10, "reconcile counted")
    code, body = http_get(sock, "/metrics")
    assert code == 200
    assert 'kvmrec_backend_up{backend="libvirt"} 1.0' in body
    assert "kvmrec_drifted_objects 0.0" in body

    conn.lookupByName(name).destroy()
    wait_for(lambda: state_of(conn, name) == "running", 10, "healed")
    controller.stop()
    lines = [json.loads(line) for line in controller.log_text().splitlines() if line.strip()]
    about = [line for line in lines if line.get("object") == f"Domain/{name}"]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert about, "log lines of a reconcile name their object"
