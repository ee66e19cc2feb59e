"""The host checks' verdicts from given facts, and the doctor's table and exit code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kvmrec import host_checks
from kvmrec.backends import host
from kvmrec.backends.libvirt.probes import LibvirtFacts, NetworkFacts
from kvmrec.backends.ovs import probe
from kvmrec.cli import doctor
from kvmrec.host_checks import FAIL, OK, WARN, Check


def test_the_overall_verdict_is_the_worst() -> None:
    assert host_checks.overall([]) == OK
    assert host_checks.overall([Check("a", OK, ""), Check("b", WARN, "", "x")]) == WARN
    assert host_checks.overall([Check("a", FAIL, "", "x"), Check("b", WARN, "", "x")]) == FAIL


def test_kvm_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: set[str] = set()
    monkeypatch.setattr(host, "loaded_modules", lambda names: [n for n in names if n in loaded])
    assert host_checks.kernel_modules().verdict == FAIL
    loaded.add("kvm")
    check = host_checks.kernel_modules()
    assert check.verdict == FAIL and "kvm_intel" in check.fix
    loaded.add("kvm_amd")
    assert host_checks.kernel_modules() == Check("kvm-modules", OK, "kvm and kvm_amd loaded")


def test_cpu_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu vme vmx hypervisor\n")
    assert host.cpu_flags(str(cpuinfo)) == {"fpu", "vme", "vmx", "hypervisor"}
    monkeypatch.setattr(host, "cpu_flags", lambda: frozenset({"fpu"}))
    monkeypatch.setattr(host, "loaded_modules", lambda names: [])
    assert host_checks.cpu_flags().verdict == FAIL
    monkeypatch.setattr(host, "loaded_modules", lambda names: ["kvm_pvm"])
    check = host_checks.cpu_flags()
    assert check.verdict == WARN and "kvm64" in check.fix
    monkeypatch.setattr(host, "cpu_flags", lambda: frozenset({"svm"}))
    assert host_checks.cpu_flags().verdict == OK


@pytest.mark.parametrize(("value", "says"), [("Y", "guests may run KVM"), ("0", "nested=1")])
def test_nested_is_never_something_to_fix(
    monkeypatch: pytest.MonkeyPatch, value: str, says: str
) -> None:
    monkeypatch.setattr(host, "nested_parameter", lambda m: value if m == "kvm_intel" else None)
    check = host_checks.nested()
    assert check.verdict == OK and says in check.detail


def test_dev_kvm_must_be_a_character_device(tmp_path: Path) -> None:
    assert host_checks.dev_kvm(str(tmp_path / "kvm")).verdict == FAIL
    plain = tmp_path / "file"
    plain.write_text("")
    assert "not a character device" in host_checks.dev_kvm(str(plain)).detail
    assert host_checks.dev_kvm("/dev/null").verdict == OK  # readable and writable by anyone


def test_disk_roots(tmp_path: Path) -> None:
    missing = host_checks.disk_root(tmp_path / "nope")
    assert missing.verdict == WARN and missing.fix.startswith("mkdir -p")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    check = host_checks.disk_root(shared)
    assert check.verdict == FAIL and "writable by others" in check.detail
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    expected = OK if os.geteuid() == 0 else FAIL  # a root-owned directory is the safe one
    assert host_checks.disk_root(private).verdict == expected


def facts(*types: str) -> LibvirtFacts:
    return LibvirtFacts("qemu:///system", "9.0.0", "QEMU", "7.2.0", "h", types)


def test_guest_types() -> None:
    assert host_checks.guest_types(facts("kvm", "qemu")).verdict == OK
    tcg = host_checks.guest_types(facts("qemu"))
    assert tcg.verdict == WARN and "TCG" in tcg.detail
    assert host_checks.guest_types(facts()).verdict == FAIL


def test_etcd_that_does_not_answer_is_a_failure() -> None:
    check = host_checks.etcd("etcd://127.0.0.1:1/prefix")
    assert check.verdict == FAIL and "127.0.0.1:1" in check.detail
    assert host_checks.etcd("etcd://[bad/x").verdict == FAIL


def test_the_table_has_one_row_per_check_in_columns() -> None:
    text = doctor.table([Check("a-check", OK, "fine"), Check("b", WARN, "worse", "fix it")])
    lines = text.splitlines()
    assert lines[0].split() == ["CHECK", "VERDICT", "DETAIL", "FIX"]
    assert lines[1].split() == ["a-check", "ok", "fine", "-"]
    assert lines[2].endswith("fix it") and lines[2].index("worse") == lines[1].index("fine")


class FakeProbes:
    def __init__(self, network: NetworkFacts | None = None, refusal: str | None = None) -> None:
        self._network, self._refusal = network, refusal
        self.tried: list[str] = []

    def network(self, name: str) -> NetworkFacts | None:
        return self._network

    def cpu_starts(self, mode: str, domain_type: str = "kvm") -> str | None:
        self.tried.append(mode)
        return self._refusal


def test_host_passthrough_that_does_not_start_is_a_warning_with_the_fix() -> None:
    probes = FakeProbes(refusal="failed to set MSR 0x10a")
    check = host_checks.host_passthrough(probes, facts("kvm", "qemu"))  # type: ignore[arg-type]
    assert check.verdict == WARN and "failed to set MSR 0x10a" in check.detail
    assert check.fix == host_checks.CPU_FIX and "kvm64" in check.fix
    assert host_checks.host_passthrough(FakeProbes(), facts("kvm")).verdict == OK  # type: ignore[arg-type]
    untried = FakeProbes()
    assert host_checks.host_passthrough(untried, facts("qemu")).verdict == WARN  # type: ignore[arg-type]
    assert untried.tried == []  # no kvm: nothing started


@pytest.mark.parametrize(
    ("active", "autostart", "verdict", "says"),
    [
        (True, True, OK, "active and autostarted"),
        (True, False, WARN, "virsh net-autostart default"),
        (False, True, WARN, "virsh net-start default"),
    ],
)
def test_the_default_network(active: bool, autostart: bool, verdict: str, says: str) -> None:
    net = NetworkFacts("default", active, autostart, "nat", "virbr0", "192.168.122.1/24")
    check = host_checks.default_network(FakeProbes(net))  # type: ignore[arg-type]
    assert check.verdict == verdict and says in check.detail + check.fix
    assert "nat, on virbr0, 192.168.122.1/24" in check.detail
    assert "bridge" in check.detail + check.fix  # the guide's advice for production
    assert host_checks.default_network(FakeProbes()).verdict == OK  # type: ignore[arg-type]


def test_openvswitch_datapaths(monkeypatch: pytest.MonkeyPatch) -> None:
    def facts_of(kernel: bool, current: bool = True) -> probe.SwitchFacts:
        return probe.SwitchFacts("3.1.0", ("netdev", "system"), current, kernel)

    monkeypatch.setattr(probe, "switch_facts", lambda remote: facts_of(True))
    check = host_checks.openvswitch("unix:x")
    assert check.verdict == OK and "datapath types that work: netdev, system" in check.detail
    monkeypatch.setattr(probe, "switch_facts", lambda remote: facts_of(False))
    check = host_checks.openvswitch("unix:x")
    assert check.verdict == WARN and "datapathType: netdev" in check.fix
    monkeypatch.setattr(probe, "switch_facts", lambda remote: facts_of(True, current=False))
    assert "ovs-vswitchd" in host_checks.openvswitch("unix:x").fix


def test_openvswitch_unreachable_is_a_warning() -> None:
    check = host_checks.openvswitch("unix:/nonexistent/db.sock")
    assert check.verdict == WARN and "does not answer" in check.detail
