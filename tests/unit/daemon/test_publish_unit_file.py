"""manifests/kvmrec-publish.service: the management host's publisher, as systemd runs it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from support.unit_files import parse, verify, words

UNIT = Path(__file__).resolve().parents[3] / "manifests" / "kvmrec-publish.service"


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse(UNIT.read_text())


def test_a_notify_service_on_a_file_of_its_own(unit: dict[str, dict[str, list[str]]]) -> None:
    service = {key: values[-1] for key, values in unit["Service"].items()}
    assert service["Type"] == "notify"  # READY=1 once the first scan is published
    assert service["ExecStart"] == (
        "/usr/local/bin/kvmrec publish --config /etc/kvmrec/publish.yaml"
    )
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"  # a rescan
    assert service["Restart"] == "on-failure"
    assert "WatchdogSec" in service
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_it_keeps_no_privilege_and_writes_nothing(
    unit: dict[str, dict[str, list[str]]],
) -> None:
    service = {key: values[-1] for key, values in unit["Service"].items()}
    assert service["CapabilityBoundingSet"] == ""
    assert service["ProtectSystem"] == "strict"
    assert "ReadWritePaths" not in service and "StateDirectory" not in service
    assert service["NoNewPrivileges"] == "yes"
    assert words(unit["Service"]["RestrictAddressFamilies"]) == {"AF_UNIX", "AF_INET", "AF_INET6"}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    assert verify(UNIT, tmp_path) == []
