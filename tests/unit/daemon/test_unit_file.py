"""manifests/kvmrec.service: the settings the service relies on, and systemd's own check."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kvmrec.settings import Settings
from support.unit_files import parse, verify, words

UNIT = Path(__file__).resolve().parents[3] / "manifests" / "kvmrec.service"


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse(UNIT.read_text())


def test_ordering_and_soft_dependencies(unit: dict[str, dict[str, list[str]]]) -> None:
    libvirt = {"libvirtd.service", "virtqemud.socket"}
    ovs = {"ovsdb-server.service", "ovs-vswitchd.service"}
    assert libvirt | ovs <= words(unit["Unit"]["After"])
    assert ovs <= words(unit["Unit"]["Wants"])
    # Never pull in a libvirt daemon: the monolithic and modular units conflict, and the one
    # the host does not use would stop the one it does (see the unit's comment).
    assert not {w for w in words(unit["Unit"]["Wants"]) if "libvirt" in w or "virtqemud" in w}
    # Wants, never Requires/BindsTo: a host without OVS must still start kvmrec.
    assert not {"Requires", "BindsTo", "Requisite"} & set(unit["Unit"])


def test_the_service_protocol(unit: dict[str, dict[str, list[str]]]) -> None:
    service = {key: values[-1] for key, values in unit["Service"].items()}
    assert service["Type"] == "notify"
    assert service["ExecStart"] == "/usr/local/bin/kvmrec run --config /etc/kvmrec/config.yaml"
    # Synchronous: `kvmrec reload` returns once the reload is in force (cli/reload.py),
    # reading the configuration file the service reads to find its state.
    assert service["ExecReload"] == (
        "/usr/local/bin/kvmrec reload --pid $MAINPID --config /etc/kvmrec/config.yaml"
    )
    assert service["Restart"] == "on-failure"
    assert service["WatchdogSec"] == "30"
    assert service["TimeoutStopSec"] == "15"
    assert service["KillMode"] == "mixed"
    assert service["StateDirectory"] == "kvmrec"


def test_hardening_that_still_reaches_the_sockets_state_and_images(
    unit: dict[str, dict[str, list[str]]],
) -> None:
    service = unit["Service"]
    settings = {key: values[-1] for key, values in service.items()}
    for key in (
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectControlGroups",
        "RestrictSUIDSGID",
        "LockPersonality",
        "RestrictRealtime",
    ):
        assert settings[key] == "yes", key
    assert settings["ProtectSystem"] == "strict"
    assert settings["SystemCallArchitectures"] == "native"
    writable = {path.lstrip("-") for path in words(service["ReadWritePaths"])}
    assert writable >= {"/run/libvirt", "/run/openvswitch", "/var/lib/libvirt/images", "/data/kvm"}
    assert words(service["CapabilityBoundingSet"]) == {"CAP_DAC_OVERRIDE", "CAP_NET_ADMIN"}
    assert {"AF_UNIX", "AF_NETLINK"} <= words(service["RestrictAddressFamilies"])


def test_the_disk_roots_and_the_state_directory_are_writable(
    unit: dict[str, dict[str, list[str]]],
) -> None:
    writable = {path.lstrip("-") for path in words(unit["Service"]["ReadWritePaths"])}
    assert {str(root) for root in Settings.disk_roots} <= writable
    assert str(Settings.state.parent) == "/var/lib/" + unit["Service"]["StateDirectory"][-1]


def test_installed_into_multi_user(unit: dict[str, dict[str, list[str]]]) -> None:
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    assert verify(UNIT, tmp_path) == []
