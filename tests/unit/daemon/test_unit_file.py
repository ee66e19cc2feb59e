"""manifests/kvmrec.service: the settings the service relies on, and systemd's own check."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kvmrec.settings import Settings

UNIT = Path(__file__).resolve().parents[3] / "manifests" / "kvmrec.service"


def parse(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd's unit syntax: sections of KEY=VALUE lines, keys may repeat (configparser
    would refuse or collapse that), comments start with # or ;."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"line {number}: not KEY=VALUE in a section: {raw}"
        assert not line.endswith("\\"), f"line {number}: keep settings on one line"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse(UNIT.read_text())


def words(values: list[str]) -> set[str]:
    return {word for value in values for word in value.split()}


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
    # verify insists that ExecStart= exists: point it at this venv's kvmrec, nothing else.
    kvmrec = Path(sys.executable).parent / "kvmrec"
    copy = tmp_path / "kvmrec.service"
    copy.write_text(UNIT.read_text().replace("/usr/local/bin/kvmrec", str(kvmrec)))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Warnings (an unknown key, a bad value) are printed without failing: none is allowed.
    complaints = [line for line in done.stderr.splitlines() if "kvmrec.service" in line]
    assert done.returncode == 0 and not complaints, done.stderr
