"""``kvmrec doctor`` on the real host: its JSON, its exit code, and checks that agree with
what libvirt, the kernel and etcd say when asked directly; and with libvirtd unreachable
(a --connect URI whose socket does not exist: the system libvirtd is never stopped)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import libvirt
import pytest

pytestmark = pytest.mark.integration

NAMES = [
    "kvm-modules",
    "cpu-virtualization",
    "nested-virtualization",
    "dev-kvm",
    "libvirtd",
    "guest-types",
    "cpu-host-passthrough",
    "default-network",
    "openvswitch",
]


def doctor(stack: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "kvmrec", "doctor", "-o", "json", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **stack},
        timeout=120,
        check=False,
    )
    assert done.stdout.strip(), done.stderr
    return done.returncode, json.loads(done.stdout)


def by_name(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in body["checks"]}


def _passthrough_starts(conn: Any) -> bool:
    xml = (
        "<domain type='kvm'><name>kt-doctor-reference</name><memory unit='MiB'>32</memory>"
        "<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os><cpu mode='host-passthrough'/>"
        "<devices><memballoon model='none'/></devices></domain>"
    )
    try:
        dom = conn.createXML(xml, libvirt.VIR_DOMAIN_START_AUTODESTROY)
    except libvirt.libvirtError:
        return False
    dom.destroy()
    return True


def test_doctor_on_this_host(stack: dict[str, str], conn: Any, tmp_path: Path) -> None:
    safe = tmp_path / "images"
    safe.mkdir(mode=0o711)
    open_to_all = tmp_path / "shared"
    open_to_all.mkdir()
    open_to_all.chmod(0o777)
    etcd = stack.get("KVMREC_ETCD", "http://127.0.0.1:2379").removeprefix("http://")
    code, body = doctor(
        stack,
        "--connect",
        stack["LIBVIRT_DEFAULT_URI"],
        "--disk-root",
        str(safe),
        "--disk-root",
        str(open_to_all),
        "--store",
        f"etcd://{etcd}/kvmrec-doctor-test",
    )
    checks = by_name(body)
    assert list(checks)[: len(NAMES)] == NAMES
    for check in body["checks"]:
        assert set(check) == {"name", "verdict", "detail", "fix"}
        assert check["verdict"] in ("ok", "warn", "fail")
        assert (check["fix"] == "") == (check["verdict"] == "ok"), check
    worst = {c["verdict"] for c in body["checks"]}
    assert body["verdict"] == ("fail" if "fail" in worst else "warn" if "warn" in worst else "ok")
    assert code == (0 if body["verdict"] == "ok" else 2)

    # What libvirt says when asked directly.
    version = conn.getLibVersion()
    assert checks["libvirtd"]["verdict"] == "ok"
    assert f"libvirt {version // 1000000}.{version // 1000 % 1000}." in checks["libvirtd"]["detail"]
    has_kvm = "<domain type='kvm'" in conn.getCapabilities()
    assert checks["guest-types"]["verdict"] == ("ok" if has_kvm else "warn")
    assert checks["dev-kvm"]["verdict"] == ("ok" if os.path.exists("/dev/kvm") else "fail")

    # host-passthrough: the doctor's verdict is what a start tried by hand finds.
    passthrough = checks["cpu-host-passthrough"]
    if _passthrough_starts(conn):
        assert passthrough["verdict"] == "ok"
    else:
        assert passthrough["verdict"] == "warn"
        assert "does not start here" in passthrough["detail"]
        assert "kvm64" in passthrough["fix"]
    assert not [d for d in conn.listAllDomains(0) if d.name().startswith("kvmrec-doctor-")]

    # Open vSwitch: system datapaths work only with the kernel module.
    ovs = checks["openvswitch"]
    if os.path.isdir("/sys/module/openvswitch"):
        assert "system" in ovs["detail"]
    else:
        assert ovs["verdict"] == "warn" and "datapath types that work: netdev" in ovs["detail"]

    assert checks[f"disk-root:{safe}"]["verdict"] == "ok"
    shared = checks[f"disk-root:{open_to_all}"]
    assert shared["verdict"] == "fail" and shared["fix"] == f"chmod o-w {open_to_all}"
    assert checks["etcd"]["verdict"] == "ok" and checks["etcd"]["detail"].startswith("etcd 3.")


def test_doctor_with_libvirtd_unreachable(stack: dict[str, str], conn: Any, tmp_path: Path) -> None:
    socket = tmp_path / "no-libvirtd" / "libvirt-sock"
    code, body = doctor(stack, "--connect", f"qemu+unix:///system?socket={socket}")
    assert code == 2 and body["verdict"] == "fail"
    checks = by_name(body)
    assert checks["libvirtd"]["verdict"] == "fail"
    assert str(socket) in checks["libvirtd"]["detail"]
    assert "start libvirtd" in checks["libvirtd"]["fix"]
    for name in ("guest-types", "cpu-host-passthrough", "default-network"):
        assert checks[name]["verdict"] == "fail"
        assert checks[name]["detail"].startswith("not checked: libvirtd")
    assert checks["kvm-modules"]["verdict"] in ("ok", "fail")  # the kernel is still checked
    assert conn.getLibVersion() > 0  # the system libvirtd was not touched


def test_doctor_exits_1_when_kvmrec_itself_fails(stack: dict[str, str], tmp_path: Path) -> None:
    broken = tmp_path / "config.yaml"
    broken.write_text("connect: [unclosed\n")
    broken.chmod(0o600)
    done = subprocess.run(
        [sys.executable, "-m", "kvmrec", "doctor", "--config", str(broken)],
        capture_output=True,
        text=True,
        env={**os.environ, **stack},
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout
    assert str(broken) in done.stderr
