"""spec.cpu on the real stack: a CPU this host refuses is a CpuNotSupported condition with
libvirt's words and is not started again and again; a CPU it runs, runs.

Which CPUs a host refuses depends on the host: a custom model that requires a
virtualization flag the host's CPU lacks (vmx or svm; no x86 CPU has both) is refused
everywhere, so that is the one asked for. host-passthrough starts on some nested hosts and
not on others: its test asks libvirt directly first and expects kvmrec to agree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import libvirt
import pytest
from realstack import Controller, condition, domain_manifest, plan, state_of, wait_for

pytestmark = pytest.mark.integration


def _missing_flag() -> str:
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return "svm" if "vmx" in flags else "vmx"


def _reconciles(controller: Controller, name: str) -> list[dict[str, Any]]:
    done = controller.cli("history", f"Domain/{name}", "--limit", "100", "-o", "json")
    return list(json.loads(done.stdout)["reconciles"]) if done.returncode == 0 else []


def _events(controller: Controller, name: str) -> list[dict[str, Any]]:
    done = controller.cli("events", f"Domain/{name}", "-o", "json")
    return list(json.loads(done.stdout)["events"]) if done.returncode == 0 else []


def test_a_cpu_the_host_refuses_is_a_condition_and_no_crash_loop(
    controller: Controller, conn: Any, prefix: str
) -> None:
    name = f"{prefix}-cpu"
    flag = _missing_flag()
    cpu = {"mode": "custom", "model": "kvm64", "features": [{"name": flag, "policy": "require"}]}
    controller.write("cpu.yaml", domain_manifest(name, "kvm", cpu=cpu))
    controller.start(resync=1)  # a resync every second: plenty of chances to loop

    def refused() -> dict[str, Any] | None:
        ready = condition(controller.object(name), "Ready")
        return ready if ready and ready["reason"] == "CpuNotSupported" else None

    ready = wait_for(refused, 30, "Ready=False CpuNotSupported")
    assert ready["status"] == "False"
    assert f"Host CPU does not provide required features: {flag}" in ready["message"]
    assert "spec.cpu mode custom, model kvm64" in ready["message"]
    obj = controller.object(name)
    assert obj is not None
    refused_at = obj["details"]["cpuRefused"]["at"]

    # Several resyncs later: still refused once, never started, no crash-loop backoff.
    before = len(_reconciles(controller, name))
    wait_for(lambda: len(_reconciles(controller, name)) >= before + 3, 30, "three more reconciles")
    obj = controller.object(name)
    assert obj is not None
    assert obj["details"]["cpuRefused"]["at"] == refused_at  # no second attempt
    assert "lastStart" not in obj["details"]
    assert state_of(conn, name) == "shutoff"
    reasons = [e["reason"] for e in _events(controller, name)]
    assert "Started" not in reasons and "CrashLoopBackOff" not in reasons
    assert reasons.count("CpuNotSupported") == 1
    assert controller.running

    # The dry run says the same: the start waits, it is not due now.
    code, body = plan(controller)
    mine = [c for c in body["changes"] if c["name"] == name]
    assert code == 2 and [c["action"] for c in mine] == ["wait"], mine
    assert "the host refused spec.cpu" in mine[0]["detail"]

    # The definition holds what was asked, as libvirt keeps it.
    xml = conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert f"<feature policy='require' name='{flag}'/>" in xml

    # Changing the manifest to a CPU the host has starts it at once.
    controller.write(
        "cpu.yaml", domain_manifest(name, "kvm", cpu={"mode": "custom", "model": "kvm64"})
    )
    wait_for(lambda: state_of(conn, name) == "running", 30, "started with kvm64")
    wait_for(
        lambda: (condition(controller.object(name), "Ready") or {}).get("reason") == "Running",
        20,
        "Ready=True Running",
    )
    obj = controller.object(name)
    assert obj is not None and "cpuRefused" not in obj["details"]
    assert obj["synced"] is True, obj["drift"]  # the live, expanded CPU is no drift


def _passthrough_starts(conn: Any, prefix: str) -> bool:
    xml = (
        f"<domain type='kvm'><name>{prefix}-probe</name><memory unit='MiB'>32</memory>"
        "<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os><cpu mode='host-passthrough'/>"
        "<devices><memballoon model='none'/></devices></domain>"
    )
    try:
        dom = conn.createXML(xml, 0)
    except libvirt.libvirtError:
        return False
    dom.destroy()
    return True


def test_host_passthrough_runs_where_the_host_runs_it_and_is_a_condition_elsewhere(
    controller: Controller, conn: Any, prefix: str
) -> None:
    name = f"{prefix}-pass"
    starts = _passthrough_starts(conn, prefix)
    controller.write("pass.yaml", domain_manifest(name, "kvm", cpu={"mode": "host-passthrough"}))
    controller.start()
    want = "Running" if starts else "CpuNotSupported"
    wait_for(
        lambda: (condition(controller.object(name), "Ready") or {}).get("reason") == want,
        30,
        f"Ready reason {want}",
    )
    xml = conn.lookupByName(name).XMLDesc(0)
    assert "mode='host-passthrough'" in xml
    if starts:
        obj = controller.object(name)
        assert obj is not None and obj["synced"] is True, obj["drift"]
