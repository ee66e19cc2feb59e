"""The host checks of a KVM operator's guide, each with a verdict and the fix.

What a guide has an operator type one by one (``lsmod | grep kvm``, ``grep -E 'vmx|svm'
/proc/cpuinfo``, ``cat /sys/module/kvm_intel/parameters/nested``, ``ls -l /dev/kvm``,
``virsh version``, ``virsh capabilities``, ``virsh net-list --all``, ``ovs-vsctl show``):
every answer is a ``Check`` with a verdict (ok, warn: works but worth fixing, fail: guests
cannot run as asked) and what to do about it. The facts come from the backends (the
kernel's files, libvirtd, OVSDB, etcd's gateway); this module only judges them.

A check that cannot be answered because what it asks is down (libvirtd) says so under
its own name, so the list of checks is the same on every host.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kvmrec.backends import host
from kvmrec.backends.errors import BackendError
from kvmrec.backends.libvirt.connection import Connection
from kvmrec.backends.libvirt.probes import HostProbes, LibvirtFacts
from kvmrec.backends.ovs import probe
from kvmrec.store.etcd import gateway

OK, WARN, FAIL = "ok", "warn", "fail"
_RANK = {OK: 0, WARN: 1, FAIL: 2}

CPU_FIX = "use the default CPU (leave spec.cpu out) or cpu: {mode: custom, model: kvm64}"


@dataclass(frozen=True)
class Check:
    name: str
    verdict: str  # ok | warn | fail
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "verdict": self.verdict, "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True)
class Target:
    """What to check: the service's libvirt, Open vSwitch, disk roots and store."""

    connect: str
    ovsdb: str
    disk_roots: tuple[Path, ...]
    store: str | None = None  # etcd://... is checked; anything else is the local state


def overall(checks: list[Check]) -> str:
    """The worst verdict."""
    return max((c.verdict for c in checks), key=_RANK.__getitem__, default=OK)


def run(target: Target) -> list[Check]:
    checks = [kernel_modules(), cpu_flags(), nested(), dev_kvm()]
    checks += list(libvirt_checks(target.connect))
    checks.append(openvswitch(target.ovsdb))
    checks += [disk_root(root) for root in target.disk_roots]
    if target.store and target.store.startswith("etcd://"):
        checks.append(etcd(target.store))
    return checks


# -- the kernel ------------------------------------------------------------------------------


def kernel_modules() -> Check:
    vendor = host.loaded_modules(host.VENDOR_MODULES)
    if not host.loaded_modules(("kvm",)):
        return Check(
            "kvm-modules",
            FAIL,
            "the kvm module is not loaded",
            "modprobe kvm_intel (Intel) or kvm_amd (AMD); if that fails, enable "
            "virtualization (VT-x/AMD-V) in the firmware",
        )
    if not vendor:
        return Check(
            "kvm-modules",
            FAIL,
            "kvm is loaded, but no kvm_intel or kvm_amd",
            "modprobe kvm_intel (Intel) or kvm_amd (AMD); dmesg says why it refuses",
        )
    return Check("kvm-modules", OK, f"kvm and {', '.join(vendor)} loaded")


def cpu_flags() -> Check:
    flags = host.cpu_flags()
    found = sorted(flags & {"vmx", "svm"})
    if found:
        return Check("cpu-virtualization", OK, f"the CPU has {found[0]} (hardware virtualization)")
    pvm = host.loaded_modules(("kvm_pvm",))
    if pvm:
        return Check(
            "cpu-virtualization",
            WARN,
            "no vmx or svm in /proc/cpuinfo: KVM runs through kvm_pvm (no hardware "
            "virtualization); host-model and host-passthrough CPUs may not start",
            "on a cloud VM, ask the provider for nested virtualization (VT-x/AMD-V); "
            f"until then {CPU_FIX}",
        )
    return Check(
        "cpu-virtualization",
        FAIL,
        "no vmx or svm in /proc/cpuinfo: no hardware virtualization, guests only under TCG",
        "enable VT-x/AMD-V in the firmware (or nested virtualization on a cloud VM), or "
        "run guests with type: qemu",
    )


def nested() -> Check:
    guest = "hypervisor" in host.cpu_flags()
    itself = " (this host is itself a virtual machine)" if guest else ""
    for module in ("kvm_intel", "kvm_amd"):
        value = host.nested_parameter(module)
        if value is None:
            continue
        if value in ("Y", "1"):
            return Check(
                "nested-virtualization", OK, f"{module} nested={value}: guests may run KVM"
            )
        return Check(
            "nested-virtualization",
            OK,
            f"{module} nested={value}: guests cannot run KVM guests of their own{itself}; to "
            f"allow it: options {module} nested=1 in /etc/modprobe.d/kvm.conf, reload {module}",
        )
    return Check(
        "nested-virtualization",
        OK,
        f"no kvm_intel or kvm_amd nested parameter: does not apply{itself}",
    )


def dev_kvm(path: str = "/dev/kvm") -> Check:
    try:
        info = os.stat(path)
    except OSError:
        return Check(
            "dev-kvm",
            FAIL,
            f"{path} does not exist: guests can only run under TCG (type: qemu)",
            "load the kvm modules (see kvm-modules)",
        )
    mode = stat.filemode(info.st_mode)
    if not stat.S_ISCHR(info.st_mode):
        return Check("dev-kvm", FAIL, f"{path} is not a character device ({mode})", "reboot")
    owner = f"{mode} uid {info.st_uid} gid {info.st_gid}"
    if not os.access(path, os.R_OK | os.W_OK):
        return Check(
            "dev-kvm",
            FAIL,
            f"{path} ({owner}) is not readable and writable by this user",
            "run as root, or add the user to the kvm group (usermod -aG kvm USER)",
        )
    return Check("dev-kvm", OK, f"{path} is accessible ({owner})")


# -- libvirt ---------------------------------------------------------------------------------


def libvirt_checks(uri: str) -> Iterator[Check]:
    connection = Connection(uri)
    probes = HostProbes(connection)
    try:
        connection.open()
        facts = probes.facts()
    except BackendError as exc:
        words = f"libvirtd at {uri} is not reachable"
        yield Check(
            "libvirtd",
            FAIL,
            f"{words}: {exc}",
            "start libvirtd (systemctl start libvirtd, or virtqemud.socket), or give "
            "--connect the right URI",
        )
        for name in ("guest-types", "cpu-host-passthrough", "default-network"):
            yield Check(name, FAIL, f"not checked: {words}", "see libvirtd")
        connection.close()
        return
    try:
        yield Check(
            "libvirtd",
            OK,
            f"libvirt {facts.libvirt_version}, {facts.hypervisor} {facts.hypervisor_version} "
            f"at {facts.uri} on {facts.hostname}",
        )
        yield guest_types(facts)
        yield _answered("cpu-host-passthrough", lambda: host_passthrough(probes, facts))
        yield _answered("default-network", lambda: default_network(probes))
    finally:
        connection.close()


def _answered(name: str, check: Callable[[], Check]) -> Check:
    try:
        return check()
    except BackendError as exc:
        return Check(name, FAIL, f"libvirtd did not answer: {exc}", "see libvirtd")


def guest_types(facts: LibvirtFacts) -> Check:
    types = facts.domain_types
    if "kvm" in types:
        return Check("guest-types", OK, f"guests get type: kvm ({', '.join(types)} offered)")
    if "qemu" in types:
        return Check(
            "guest-types",
            WARN,
            "only type: qemu (TCG emulation, many times slower): libvirt offers no kvm",
            "load the kvm modules and make /dev/kvm accessible to QEMU's user; restart "
            "libvirtd so it probes again",
        )
    return Check("guest-types", FAIL, "libvirt offers no x86_64 guest types", "install QEMU")


def host_passthrough(probes: HostProbes, facts: LibvirtFacts) -> Check:
    if "kvm" not in facts.domain_types:
        return Check(
            "cpu-host-passthrough",
            WARN,
            "not tried: host-passthrough needs type: kvm, which this host does not offer",
            CPU_FIX,
        )
    refused = probes.cpu_starts("host-passthrough")
    if refused is None:
        return Check("cpu-host-passthrough", OK, "a host-passthrough guest starts here")
    return Check(
        "cpu-host-passthrough",
        WARN,
        f"a host-passthrough guest does not start here: {refused}",
        CPU_FIX,
    )


def default_network(probes: HostProbes) -> Check:
    net = probes.network("default")
    production = "for production, guests reachable from the LAN go on a bridge (forward: bridge)"
    if net is None:
        return Check("default-network", OK, f"no libvirt network 'default'; {production}")
    where = ", ".join(
        part
        for part in (
            f"{net.forward or 'isolated'}",
            f"on {net.bridge}" if net.bridge else "",
            net.address or "",
        )
        if part
    )
    if not net.active:
        return Check(
            "default-network",
            WARN,
            f"'default' ({where}) is defined but not active: guests on it cannot start",
            "virsh net-start default; virsh net-autostart default (or manage it as a "
            f"Network manifest); {production}",
        )
    if not net.autostart:
        return Check(
            "default-network",
            WARN,
            f"'default' ({where}) is active but not autostarted: gone after a reboot",
            f"virsh net-autostart default; {production}",
        )
    return Check(
        "default-network", OK, f"'default' ({where}) is active and autostarted; {production}"
    )


# -- Open vSwitch, disk roots, etcd ------------------------------------------------------------


def openvswitch(remote: str) -> Check:
    try:
        facts = probe.switch_facts(remote)
    except BackendError as exc:
        return Check(
            "openvswitch",
            WARN,
            f"OVSDB at {remote} does not answer: {exc} (needed only for OvsBridge and "
            "bridges with virtualport openvswitch)",
            "start Open vSwitch (systemctl start openvswitch-switch), or give --ovsdb",
        )
    version = f"Open vSwitch {facts.version}, " if facts.version else ""
    working = ", ".join(facts.working_datapaths) or "none"
    detail = f"{version}OVSDB at {remote}; datapath types that work: {working}"
    if not facts.vswitchd_current:
        return Check(
            "openvswitch",
            WARN,
            f"{detail}; ovs-vswitchd has not applied the configuration (is it running?)",
            "start ovs-vswitchd (systemctl restart openvswitch-switch)",
        )
    if not facts.kernel_datapath:
        return Check(
            "openvswitch",
            WARN,
            f"{detail}; no openvswitch kernel module: datapath type system does not work "
            "(bridges would get no ports)",
            "modprobe openvswitch, or give OvsBridge datapathType: netdev (userspace)",
        )
    return Check("openvswitch", OK, detail)


def disk_root(root: Path) -> Check:
    name = f"disk-root:{root}"
    try:
        info = os.stat(root)
    except FileNotFoundError:
        return Check(
            name, WARN, f"{root} does not exist", f"mkdir -p {root}, or drop it from disk_roots"
        )
    except OSError as exc:
        return Check(name, FAIL, f"{root}: {exc.strerror}", f"check {root}")
    mode = stat.filemode(info.st_mode)
    if not stat.S_ISDIR(info.st_mode):
        return Check(name, FAIL, f"{root} is not a directory ({mode})", f"make {root} a directory")
    problems, fixes = [], []
    if info.st_uid != 0:
        problems.append(f"owned by uid {info.st_uid}, not root")
        fixes.append(f"chown root {root}")
    if info.st_mode & stat.S_IWOTH:
        problems.append("writable by others")
        fixes.append(f"chmod o-w {root}")
    if problems:
        return Check(
            name,
            FAIL,
            f"{root} ({mode}) is {' and '.join(problems)}: anyone could plant disk images QEMU "
            "opens as root",
            "; ".join(fixes),
        )
    return Check(name, OK, f"{root} ({mode}, root's)")


def etcd(url: str) -> Check:
    where = url[len("etcd://") :].split("/", 1)[0]
    try:
        client = gateway.Gateway(gateway.parse_endpoints(where), timeout=3.0)
    except ValueError as exc:
        return Check("etcd", FAIL, f"{url}: {exc}", "give --store etcd://HOST:PORT[/PREFIX]")
    try:
        status = client.post("/v3/maintenance/status", {})
    except gateway.EtcdError as exc:
        return Check(
            "etcd", FAIL, f"etcd at {where} does not answer: {exc}", "start etcd, or fix --store"
        )
    finally:
        client.close()
    return Check("etcd", OK, f"etcd {status.get('version', '?')} at {where}")
